"""What a decision turns into for one VA: its conditions and its whole status subresource (WVA's shape).

Pure: the core passes the time in. ``lastTransitionTime`` of a condition moves only when its status
does, as Kubernetes conventions ask.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import UTC, datetime

from services.scaler import reasons
from services.scaler.actions import (
    Actuation,
    Condition,
    OptimizedAlloc,
    StatusCondition,
    VAStatus,
)
from services.scaler.holds import Check, condition
from shared.messages import Decision, Target

Transitions = MutableMapping[str, tuple[str, str]]  # condition type -> (status, lastTransitionTime)


def timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def conditions(target: Target, check: Check, *, group_reason: str, group_detail: str, refusal: str) -> tuple[Condition, ...]:
    """TargetResolved, MetricsAvailable and OptimizationReady of one VA after an evaluation."""
    tr = reasons.TARGET_RESOLVED
    if check.hold == reasons.HOLD_CONFLICT:
        resolved = condition(tr, False, reasons.SCALE_TARGET_CONFLICT, check.why)
    elif not target.resolved:
        st = target.scale_target
        resolved = condition(tr, False, reasons.SCALE_TARGET_NOT_FOUND, f"scale target {st.kind} {st.name or target.name} not found")
    elif refusal:
        resolved = condition(tr, False, reasons.ACTUATION_REFUSED, refusal)
    else:
        resolved = condition(tr, True, reasons.SCALE_TARGET_FOUND, "scale target found")
    ready_type = reasons.OPTIMIZATION_READY
    if group_reason in reasons.SPEC_HOLDS:
        ready = condition(ready_type, False, reasons.OPTIMIZATION_FAILED, f"{group_reason}: {group_detail}")
    elif group_reason in reasons.METRIC_HOLDS:
        ready = condition(ready_type, False, reasons.METRICS_UNAVAILABLE, f"{group_reason}: {group_detail}")
    else:
        ready = condition(ready_type, True, reasons.OPTIMIZATION_SUCCEEDED, group_reason)
    return (resolved, check.metrics, ready)


def status(
    target: Target,
    decision: Decision | None,
    current: tuple[Condition, ...],
    transitions: Transitions,
    *,
    now: datetime,
) -> VAStatus:
    """The VA's status: the last published decision and the conditions (``transitions`` is updated)."""
    stamped: list[StatusCondition] = []
    for c in current:
        before = transitions.get(c.type)
        if before is None or before[0] != c.status:
            transitions[c.type] = (c.status, timestamp(now))
        stamped.append(
            StatusCondition(
                type=c.type,
                status=c.status,
                reason=c.reason,
                message=c.message,
                observed_generation=target.va_generation,
                last_transition_time=transitions[c.type][1],
            )
        )
    if decision is None:
        return VAStatus(conditions=tuple(stamped))
    return VAStatus(
        desired_optimized_alloc=OptimizedAlloc(
            accelerator=decision.accelerator or target.accelerator,
            num_replicas=decision.desired,
            last_run_time=timestamp(decision.at),
        ),
        actuation=Actuation(applied=decision.applied),
        conditions=tuple(stamped),
    )
