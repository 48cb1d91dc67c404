"""V1: WVA's saturation analysis over all replicas of a model group (docs/algorithms.md, "Saturation
analysis", "Step size"), with its transition guard and cost-aware choice of variant.

Comparisons allow ``EPSILON`` of floating-point noise so that the decimal arithmetic of the worked
examples holds: ``0.80 - 0.70`` is ``0.10000000000000009`` in binary floating point, and an average
spare of exactly the trigger must not scale up (the trigger is strict).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from services.scaler import choice, reasons
from services.scaler.analyzers import GroupView, Recommendation, VariantView
from services.scaler.scaling_config import ScalingConfig
from shared.messages import DecisionNumbers

EPSILON: Final = 1e-9

Trigger = Literal["", "saturated", "spare_kv", "spare_queue"]


@dataclass(frozen=True, slots=True)
class Analysis:
    """All the numbers of one analysis. ``trigger`` says why scale-up is wanted ("" when it is not)."""

    replicas: int
    saturated: int
    non_saturated: int
    avg_spare_kv: float
    avg_spare_queue: float
    sum_kv: float
    sum_queue: float
    trigger: Trigger
    scale_down_safe: bool

    @property
    def scale_up(self) -> bool:
        return self.trigger != ""


def analyze(loads: Sequence[tuple[float, float]], config: ScalingConfig) -> Analysis:
    """Analyse replicas given as ``(kv_cache_usage, waiting)`` pairs (valid values only)."""
    kv_threshold = config.kv_cache_threshold
    q_threshold = config.queue_length_threshold
    saturated = 0
    spare_kv = spare_q = sum_kv = sum_q = 0.0
    for kv, queue in loads:
        sum_kv += kv
        sum_q += queue
        if kv >= kv_threshold - EPSILON or queue >= q_threshold - EPSILON:
            saturated += 1
        else:
            spare_kv += kv_threshold - kv
            spare_q += q_threshold - queue
    n = len(loads) - saturated
    avg_kv = spare_kv / n if n else 0.0
    avg_q = spare_q / n if n else 0.0
    trigger: Trigger = ""
    if n == 0:
        trigger = "saturated"
    elif avg_kv < config.kv_spare_trigger - EPSILON:
        trigger = "spare_kv"
    elif avg_q < config.queue_spare_trigger - EPSILON:
        trigger = "spare_queue"
    safe = False
    if not trigger and n >= 2:
        safe = _spare_after_removal(kv_threshold, avg_kv, n) >= config.kv_spare_trigger - EPSILON and (
            _spare_after_removal(q_threshold, avg_q, n) >= config.queue_spare_trigger - EPSILON
        )
    return Analysis(
        replicas=len(loads),
        saturated=saturated,
        non_saturated=n,
        avg_spare_kv=avg_kv,
        avg_spare_queue=avg_q,
        sum_kv=sum_kv,
        sum_queue=sum_q,
        trigger=trigger,
        scale_down_safe=safe,
    )


def _spare_after_removal(threshold: float, avg_spare: float, n: int) -> float:
    """``threshold - load * N / (N - 1)`` with ``load = threshold - avg_spare``."""
    load = threshold - avg_spare
    return threshold - load * n / (n - 1)


def _ceil(value: float) -> int:
    return math.ceil(value - EPSILON)


def needed_replicas(analysis: Analysis, config: ScalingConfig) -> int | None:
    """Replicas needed for the average load to sit below the triggers again (None if undefined).

    ``max(ceil(sum(kv) / (kvCacheThreshold - kvSpareTrigger)),
    ceil(sum(queue) / (queueLengthThreshold - queueSpareTrigger)))``; a term whose divisor is zero
    (threshold equal to trigger) is left out.
    """
    terms: list[int] = []
    kv_room = config.kv_cache_threshold - config.kv_spare_trigger
    if kv_room > EPSILON:
        terms.append(_ceil(analysis.sum_kv / kv_room))
    q_room = config.queue_length_threshold - config.queue_spare_trigger
    if q_room > EPSILON:
        terms.append(_ceil(analysis.sum_queue / q_room))
    return max(terms) if terms else None


def scale_up_step(analysis: Analysis, config: ScalingConfig, current: int) -> tuple[int | None, int]:
    """``(needed, step)`` for a scale-up from ``current`` replicas (docs/algorithms.md, "Step size")."""
    needed = needed_replicas(analysis, config)
    if config.scale_up_step == "one" or needed is None:
        return needed, 1
    return needed, min(max(1, needed - current), config.max_scale_up_step)


def removable(analysis: Analysis, config: ScalingConfig) -> int:
    """How many replicas may go with the triggers still met afterwards (``scaleDownStep: proportional``):
    the largest ``k`` with ``threshold - load * N / (N - k) >= trigger`` for KV and queue alike."""
    n = analysis.non_saturated
    if not analysis.scale_down_safe:
        return 0
    kv_load = config.kv_cache_threshold - analysis.avg_spare_kv
    q_load = config.queue_length_threshold - analysis.avg_spare_queue
    k = 1
    while k + 1 < n:
        after = n / (n - (k + 1))
        if (config.kv_cache_threshold - kv_load * after < config.kv_spare_trigger - EPSILON) or (
            config.queue_length_threshold - q_load * after < config.queue_spare_trigger - EPSILON
        ):
            break
        k += 1
    return k


def _transition(variants: Sequence[VariantView]) -> str:
    """Why the group is in transition ("" when it is not): V1 holds every variant until the last step
    has landed, because its percentages cannot tell a starting replica from a missing one."""
    for v in variants:
        reporting = len(v.metrics.pods)
        if v.spec != v.ready:
            return f"{v.name}: {v.ready} of {v.spec} replicas ready"
        if reporting != v.spec:
            return f"{v.name}: {reporting} replicas report metrics, spec has {v.spec}"
        if v.expected != v.spec:
            return f"{v.name}: last desired {v.expected} not reached yet (spec {v.spec})"
    return ""


class SaturationAnalyzer:
    """WVA's V1 rules as an :class:`~services.scaler.analyzers.Analyzer`."""

    name = "v1"

    def recommend(self, group: GroupView) -> Recommendation:
        variants = group.variants
        config = group.config
        current = tuple(v.expected for v in variants)
        total = sum(current)
        why = _transition(variants)
        if why:
            numbers = DecisionNumbers(replicas_total=total)
            return Recommendation(desired=current, reason=reasons.HOLD_TRANSITION, detail=why, numbers=numbers)
        loads = [(r.kv, r.queue) for v in variants for r in v.metrics.replicas]
        analysis = analyze(loads, config)
        numbers = DecisionNumbers(
            replicas_total=analysis.replicas,
            saturated=analysis.saturated,
            non_saturated=analysis.non_saturated,
            avg_spare_kv=analysis.avg_spare_kv,
            avg_spare_queue=analysis.avg_spare_queue,
        )
        figures = (
            f"{analysis.replicas} replicas, {analysis.saturated} saturated, avg spare KV "
            f"{analysis.avg_spare_kv:.3f} (trigger {config.kv_spare_trigger:g}), avg spare queue "
            f"{analysis.avg_spare_queue:.2f} (trigger {config.queue_spare_trigger:g})"
        )
        choices = [
            choice.Variant(
                name=v.name,
                cost=v.cost,
                min_replicas=v.min_replicas,
                max_replicas=v.max_replicas,
                current=v.expected,
                frozen=v.frozen,
            )
            for v in variants
        ]
        if analysis.scale_up:
            needed, step = scale_up_step(analysis, config, total)
            added = choice.distribute_scale_up(choices, step)
            numbers = msgspec.structs.replace(numbers, needed=needed, step=step)
            if not added:
                detail = f"scale-up wanted, every variant at maxReplicas; {figures}"
                return Recommendation(desired=current, reason=reasons.HOLD_AT_BOUNDS, detail=detail, numbers=numbers)
            desired = tuple(c + added.get(v.name, 0) for c, v in zip(current, variants, strict=True))
            numbers = msgspec.structs.replace(
                numbers, chosen_variant=",".join(added), bounded=sum(added.values()) < step
            )
            steps = ", ".join(f"+{n} on {name}" for name, n in added.items())
            detail = f"{steps}; {figures}" + (f"; needed {needed}, step {step}" if needed is not None else "")
            return Recommendation(
                desired=desired, reason=reasons.SCALE_UP_REASONS[analysis.trigger], detail=detail, numbers=numbers
            )
        if not analysis.scale_down_safe:
            return Recommendation(desired=current, reason=reasons.HOLD_NO_TRIGGER, detail=figures, numbers=numbers)
        count = removable(analysis, config) if config.scale_down_step == "proportional" else 1
        removed = choice.distribute_scale_down(choices, count)
        if not removed:
            detail = f"scale-down safe, no variant above max(minReplicas, 1); {figures}"
            return Recommendation(desired=current, reason=reasons.HOLD_AT_BOUNDS, detail=detail, numbers=numbers)
        desired = tuple(c - removed.get(v.name, 0) for c, v in zip(current, variants, strict=True))
        numbers = msgspec.structs.replace(
            numbers, step=-sum(removed.values()), chosen_variant=",".join(removed)
        )
        steps = ", ".join(f"-{n} on {name}" for name, n in removed.items())
        return Recommendation(
            desired=desired, reason=reasons.SCALE_DOWN_SPARE_CAPACITY, detail=f"{steps}; {figures}", numbers=numbers
        )
