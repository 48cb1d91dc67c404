"""Sizing a model group in some unit of capacity (tokens for V2, requests per second for the SLO
analyzer): required and spare capacity against anticipated and ready supply, and the cost-aware choice
of which variants grow or shrink (docs/algorithms.md, V2 steps 4-6).

    required = max(0, demand / scaleUpThreshold - anticipated)     anticipated = sum(expected_v * c_v)
    spare    = max(0, supply - demand / scaleDownBoundary)         supply      = sum(ready_v * c_v)

Scale-up adds to the variant with the lowest cost per unit capacity until the added capacity covers
``required`` (spilling over at ``maxReplicas``, capped by ``maxScaleUpStep`` in total); scale-down
removes from the highest cost per unit capacity first, each removal only while the remaining spare is
at least that replica's capacity, never below ``max(minReplicas, 1)``. Starting pods count in
``anticipated``, so there is no transition guard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from services.scaler import reasons
from services.scaler.analyzers import Recommendation, VariantView
from services.scaler.analyzers.saturation import EPSILON
from shared.messages import DecisionNumbers


@dataclass(frozen=True, slots=True)
class Sized:
    """A variant and its per-replica capacity (None: unknown) with where that figure came from."""

    view: VariantView
    capacity: float | None
    source: str

    @property
    def cost_per_unit(self) -> float:
        assert self.capacity is not None and self.capacity > 0
        return self.view.cost / self.capacity


@dataclass(frozen=True, slots=True)
class Balance:
    demand: float
    supply: float
    anticipated: float
    required: float
    spare: float


def balance(variants: Sequence[Sized], demand: float, *, up: float, down: float) -> Balance:
    supply = sum(v.view.ready * v.capacity for v in variants if v.capacity)
    anticipated = sum(v.view.expected * v.capacity for v in variants if v.capacity)
    return Balance(
        demand=demand,
        supply=supply,
        anticipated=anticipated,
        required=max(0.0, demand / up - anticipated),
        spare=max(0.0, supply - demand / down),
    )


def recommend(
    variants: Sequence[Sized], b: Balance, *, max_step: int, figures: str, numbers: DecisionNumbers
) -> Recommendation:
    """Grow for ``b.required``, else shrink for ``b.spare``, else hold."""
    current = tuple(v.view.expected for v in variants)
    if b.required > EPSILON:
        added = _add(variants, b.required, max_step)
        if not added:
            return Recommendation(
                desired=current, reason=reasons.HOLD_AT_BOUNDS,
                detail=f"scale-up wanted, every variant at maxReplicas; {figures}", numbers=numbers,
            )  # fmt: skip
        return _step(variants, added, +1, reasons.SCALE_UP_CAPACITY, figures, numbers)
    if b.spare > EPSILON:
        removed = _remove(variants, b.spare)
        if removed:
            return _step(variants, removed, -1, reasons.SCALE_DOWN_SPARE_CAPACITY, figures, numbers)
        return Recommendation(
            desired=current, reason=reasons.HOLD_AT_BOUNDS,
            detail=f"spare capacity, but less than a replica's or every variant at its floor; {figures}",
            numbers=numbers,
        )  # fmt: skip
    return Recommendation(desired=current, reason=reasons.HOLD_NO_TRIGGER, detail=figures, numbers=numbers)


def _by_efficiency(variants: Sequence[Sized]) -> list[Sized]:
    """Lowest cost per unit capacity first (ties: lower cost, then lower name); unknown ones last, and
    variants that will act (not paused or dry-run) before frozen ones."""
    return sorted(
        variants,
        key=lambda v: (
            v.view.frozen,
            v.capacity is None,
            v.cost_per_unit if v.capacity else 0.0,
            v.view.cost,
            v.view.name,
        ),
    )


def _add(variants: Sequence[Sized], required: float, cap: int) -> dict[str, int]:
    added: dict[str, int] = {}
    remaining, budget = required, cap
    for v in _by_efficiency(variants):
        if remaining <= EPSILON or budget <= 0:
            break
        room = budget if v.view.max_replicas is None else min(budget, max(0, v.view.max_replicas - v.view.expected))
        if room <= 0:
            continue
        want = math.ceil(remaining / v.capacity - EPSILON) if v.capacity else 1
        take = min(room, max(1, want))
        added[v.view.name] = take
        budget -= take
        remaining -= take * (v.capacity or 0.0)
        if not v.capacity:
            break  # a variant of unknown capacity gets one replica, and only when nothing else could act
    return added


def _remove(variants: Sequence[Sized], spare: float) -> dict[str, int]:
    removed: dict[str, int] = {}
    remaining = spare
    for v in reversed(_by_efficiency([v for v in variants if v.capacity])):
        floor = max(v.view.min_replicas, 1)
        n = 0
        while v.view.expected - n > floor and remaining >= (v.capacity or math.inf) - EPSILON:
            n += 1
            remaining -= v.capacity or 0.0
        if n:
            removed[v.view.name] = n
    return removed


def _step(
    variants: Sequence[Sized], counts: dict[str, int], sign: int, reason: str, figures: str, numbers: DecisionNumbers
) -> Recommendation:
    desired = tuple(v.view.expected + sign * counts.get(v.view.name, 0) for v in variants)
    steps = ", ".join(f"{'+' if sign > 0 else '-'}{n} on {name}" for name, n in counts.items())
    numbers = msgspec.structs.replace(numbers, step=sign * sum(counts.values()), chosen_variant=",".join(counts))
    return Recommendation(desired=desired, reason=reason, detail=f"{steps}; {figures}", numbers=numbers)
