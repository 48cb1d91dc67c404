"""Scale to zero and back (docs/algorithms.md, "Scale to zero", "Scale from zero and to zero").

A model at zero has no pods and so no pod metrics; only traffic seen in front of the pods can bring it
back. These rules run before the analyzer, which needs replicas to reason about.
"""

from __future__ import annotations

import msgspec

from services.scaler import choice, reasons
from services.scaler.analyzers import GroupView, Recommendation
from services.scaler.analyzers.saturation import EPSILON
from shared.messages import DecisionNumbers


def _choices(group: GroupView) -> list[choice.Variant]:
    return [
        choice.Variant(
            name=v.name,
            cost=v.cost,
            min_replicas=v.min_replicas,
            max_replicas=v.max_replicas,
            current=v.expected,
            frozen=v.frozen,
        )
        for v in group.variants
    ]


def _demand(group: GroupView) -> bool:
    return any((v.metrics.arrival_rate or 0.0) > 0.0 for v in group.variants)


def from_zero(group: GroupView) -> Recommendation | None:
    """The group is at zero: bring the cheapest variant back when there is traffic (or when scale to
    zero is disabled); None when the group is not at zero."""
    current = tuple(v.expected for v in group.variants)
    if sum(current) > 0:
        return None
    numbers = DecisionNumbers(replicas_total=0)
    if group.config.scale_to_zero.enabled and not _demand(group):
        return Recommendation(desired=current, reason=reasons.SCALE_TO_ZERO, detail="at zero; no request reported", numbers=numbers)
    choices = _choices(group)
    first = choice.cheapest(choices)
    if first is None:
        detail = "at zero; no variant may run a replica"
        return Recommendation(desired=current, reason=reasons.HOLD_AT_BOUNDS, detail=detail, numbers=numbers)
    desired = tuple(1 if v.name == first.name else 0 for v in group.variants)
    numbers = msgspec.structs.replace(numbers, step=1, chosen_variant=first.name)
    detail = f"group at zero; +1 on cheapest {first.name}"
    return Recommendation(desired=desired, reason=reasons.SCALE_UP_FROM_ZERO, detail=detail, numbers=numbers)


def to_zero(group: GroupView, *, idle_since: float | None) -> Recommendation | None:
    """Every variant that may go to zero goes there once the model has had no request for the whole
    retention period (opt-in); None otherwise."""
    stz = group.config.scale_to_zero
    if not stz.enabled or idle_since is None or group.now - idle_since < stz.retention_seconds - EPSILON:
        return None
    going = [v.name for v in group.variants if v.min_replicas == 0 and v.expected > 0]
    if not going:
        return None
    desired = tuple(0 if v.name in going else v.expected for v in group.variants)
    chosen = ",".join(going)
    numbers = DecisionNumbers(replicas_total=sum(v.expected for v in group.variants), chosen_variant=chosen)
    detail = f"no request for {stz.retention_seconds:g}s; {chosen} to zero"
    return Recommendation(desired=desired, reason=reasons.SCALE_TO_ZERO, detail=detail, numbers=numbers)
