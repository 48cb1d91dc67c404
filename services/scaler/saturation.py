"""V1 saturation analysis over all replicas of a model group (docs/algorithms.md, "Saturation analysis").

Comparisons allow ``EPSILON`` of floating-point noise so that the decimal arithmetic of the worked
examples holds: ``0.80 - 0.70`` is ``0.10000000000000009`` in binary floating point, and an average
spare of exactly the trigger must not scale up (the trigger is strict).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from services.scaler.scaling_config import ScalingConfig

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
