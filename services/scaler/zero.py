"""Scale to zero and back (docs/algorithms.md, "Scale to zero", "Scale from zero and to zero").

A model at zero has no pods and so no pod metrics; only traffic seen in front of the pods can bring it
back. These rules run before the analyzer, which needs replicas to reason about.
"""

from __future__ import annotations

import math

import msgspec

from services.scaler import choice, reasons
from services.scaler.analyzers import GroupView, Recommendation
from services.scaler.analyzers.capacity import DEFAULT_TOKENS_PER_REQUEST, CapacityMemory
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


def gateway_queue(group: GroupView) -> float:
    """Requests of the model waiting in front of its replicas (the largest any snapshot reports)."""
    return max((v.metrics.gateway_queue or 0.0) for v in group.variants)


def _demand(group: GroupView) -> bool:
    return gateway_queue(group) > 0.0 or any((v.metrics.arrival_rate or 0.0) > 0.0 for v in group.variants)


def from_zero(group: GroupView, memory: CapacityMemory) -> Recommendation | None:
    """The group is at zero: when requests wait in front of it (or are reported at all), bring back the
    most cost-efficient variant it knows a capacity for — sized for the queue — else the cheapest, one
    replica; when scale to zero is disabled, one replica anyway. None when the group is not at zero."""
    current = tuple(v.expected for v in group.variants)
    if sum(current) > 0:
        return None
    queued = gateway_queue(group)
    numbers = DecisionNumbers(replicas_total=0, gateway_queue=queued)
    if group.config.scale_to_zero.enabled and not _demand(group):
        return Recommendation(desired=current, reason=reasons.SCALE_TO_ZERO, detail="at zero; no request reported", numbers=numbers)
    choices = [c for c in _choices(group) if c.max_replicas is None or c.max_replicas >= 1]
    known = [c for c in choices if c.name in memory.capacity and memory.capacity[c.name][0] > 0]
    shape = memory.tokens_per_request or DEFAULT_TOKENS_PER_REQUEST
    if known and queued > 0:
        first = min(known, key=lambda c: (c.frozen, c.cost / memory.capacity[c.name][0], c.cost, c.name))
        per_replica = memory.capacity[first.name][0]
        count = max(1, math.ceil(queued * shape / group.config.scale_up_threshold / per_replica - EPSILON))
        count = min(count, group.config.max_scale_up_step, first.max_replicas or count)
        detail = (
            f"group at zero, {queued:g} requests waiting in front of it: +{count} on {first.name} "
            f"({queued:g} x {shape:,.0f} tokens / {group.config.scale_up_threshold:g} / {per_replica:,.0f} per replica)"
        )
    else:
        found = choice.cheapest(choices)
        if found is None:
            detail = "at zero; no variant may run a replica"
            return Recommendation(desired=current, reason=reasons.HOLD_AT_BOUNDS, detail=detail, numbers=numbers)
        first, count = found, 1
        detail = f"group at zero; +1 on cheapest {first.name}"
    desired = tuple(count if v.name == first.name else 0 for v in group.variants)
    numbers = msgspec.structs.replace(numbers, step=count, chosen_variant=first.name)
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
