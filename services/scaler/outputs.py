"""What a decision turns into for one VA: its conditions and its whole status subresource (WVA's shape).

Pure: the core passes the time in. ``lastTransitionTime`` of a condition moves only when its status
does, as Kubernetes conventions ask.

What the core keeps per VA to write a status only when it changes is small (docs/benchmarks.md,
"Memory per tracked VA"): the transition times as one tuple, shared strings for equal times, the
inputs of the last status written (:func:`status_inputs`) rather than the status itself, and of the
last decision only what the core reads again (:class:`Decided`), not the published message.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Final

import msgspec

from services.scaler import reasons
from services.scaler.actions import (
    Actuation,
    Condition,
    OptimizedAlloc,
    StatusCondition,
    VAStatus,
)
from services.scaler.holds import Check, condition
from services.scaler.tracked import Tracked
from shared.interning import Interner
from shared.messages import Decision


class Decided(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the core reads again of a VA's last published decision: whether the next one differs
    (desired, reason, recommended), its status (accelerator, desired, at, applied) and the count the
    Deployment had (current). The published :class:`~shared.messages.Decision` (its detail, numbers,
    cursor) is not kept: about 600 bytes a VA (docs/benchmarks.md, "Memory per tracked VA")."""

    desired: int
    current: int
    reason: str
    recommended: int | None
    applied: bool
    accelerator: str
    at: datetime

    @classmethod
    def of(cls, decision: Decision) -> Decided:
        return cls(
            desired=decision.desired,
            current=decision.current,
            reason=decision.reason,
            recommended=decision.numbers.recommended,
            applied=decision.applied,
            accelerator=decision.accelerator,
            at=decision.at,
        )


Transitions = tuple[tuple[str, str, str], ...]  # (condition type, status, lastTransitionTime), by first seen


@functools.lru_cache(maxsize=256)
def timestamp(at: datetime) -> str:
    """RFC 3339 in UTC; one string per instant for every VA decided or stamped at that instant."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=1024)
def _transition(type_: str, status: str, at: str) -> tuple[str, str, str]:
    return (type_, status, at)


def transitions(current: tuple[Condition, ...], before: Transitions, *, now: datetime) -> Transitions:
    """The transition times after ``current``: a condition whose status moved (or that is new) is
    stamped ``now``, the others keep theirs; ``before`` itself when nothing moved."""
    times = {t: (status, at) for t, status, at in before}
    moved = False
    for c in current:
        seen = times.get(c.type)
        if seen is None or seen[0] != c.status:
            times[c.type] = (c.status, timestamp(now))
            moved = True
    if not moved:
        return before
    return _shared_times(tuple(_transition(t, status, at) for t, (status, at) in times.items()))


# One tuple for equal conditions or transition times: most VAs have the same three conditions, and
# those that moved at the same instant the same times.
_shared_times: Final[Interner[tuple[tuple[str, str, str], ...]]] = Interner()
_shared_conditions: Final[Interner[tuple[Condition, ...]]] = Interner()


class StatusInputs(msgspec.Struct, frozen=True, gc=False):
    """What :func:`status` reads, as a value: equal inputs give an equal status and, as every one of
    them is written into it, different inputs a different one. The decision's fields are None
    without a decision (a decided accelerator is a string, maybe empty)."""

    generation: int | None
    current: tuple[Condition, ...]
    stamps: Transitions
    accelerator: str | None = None
    desired: int | None = None
    at: datetime | None = None
    applied: bool | None = None


def status_inputs(
    target: Tracked, decision: Decided | None, current: tuple[Condition, ...], stamps: Transitions
) -> StatusInputs:
    generation = target.va_generation if current else None
    if decision is None:
        return StatusInputs(generation, current, stamps)
    accelerator = decision.accelerator or target.accelerator
    return StatusInputs(generation, current, stamps, accelerator, decision.desired, decision.at, decision.applied)


def conditions(
    target: Tracked,
    check: Check,
    *,
    group_reason: str,
    group_detail: str,
    refusal: str,
    before: tuple[Condition, ...] = (),
) -> tuple[Condition, ...]:
    """TargetResolved, MetricsAvailable and OptimizationReady of one VA after an evaluation (``before``
    itself when they are the very conditions it holds: most evaluations change none)."""
    tr = reasons.TARGET_RESOLVED
    if check.hold == reasons.HOLD_CONFLICT:
        resolved = condition(tr, False, reasons.SCALE_TARGET_CONFLICT, check.why)
    elif not target.resolved:
        why = f"scale target {target.scale_kind} {target.deployment} not found"
        resolved = condition(tr, False, reasons.SCALE_TARGET_NOT_FOUND, why)
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
    if len(before) == 3 and before[0] is resolved and before[1] is check.metrics and before[2] is ready:
        return before
    return _shared_conditions((resolved, check.metrics, ready))


def status(
    target: Tracked,
    decision: Decided | None,
    current: tuple[Condition, ...],
    stamps: Transitions,
) -> VAStatus:
    """The VA's status: the last published decision and the conditions, stamped from ``stamps``."""
    times = {t: at for t, _, at in stamps}
    stamped = tuple(
        StatusCondition(
            type=c.type,
            status=c.status,
            reason=c.reason,
            message=c.message,
            observed_generation=target.va_generation,
            last_transition_time=times[c.type],
        )
        for c in current
    )
    if decision is None:
        return VAStatus(conditions=stamped)
    return VAStatus(
        desired_optimized_alloc=OptimizedAlloc(
            accelerator=decision.accelerator or target.accelerator,
            num_replicas=decision.desired,
            last_run_time=timestamp(decision.at),
        ),
        actuation=Actuation(applied=decision.applied),
        conditions=stamped,
    )
