"""Whether a VA's inputs can be acted on, and if not why (docs/algorithms.md, "Stability and safety").

One VA that cannot be acted on holds its whole group: a group decides over all its variants at once.
The checks, most important first (``reasons.HOLD_PRIORITY``): the VA's spec has problems; its scale
target does not exist; another VA targets the same Deployment; its metrics are missing, unavailable or
incomplete; they describe an older Deployment than the VA's (ordered by generation and pod-template
hash, never by clocks); they are older than ``staleAfterSeconds`` by the scaler's clock.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from services.scaler import reasons
from services.scaler.actions import Condition
from services.scaler.digest import Digest
from services.scaler.tracked import Tracked

_MAX_REASON = 200  # a snapshot's reason comes from the wire and goes into a status: keep it short


@dataclass(frozen=True, slots=True)
class Check:
    """The VA's own hold reason ("" when usable), the text that explains it, and its conditions."""

    hold: str
    why: str
    metrics: Condition  # MetricsAvailable


@functools.lru_cache(maxsize=4096)
def condition(type_: str, ok: bool, reason: str, message: str) -> Condition:
    """One instance per distinct condition (conditions are immutable): every VA keeps its three, and
    most VAs have the same ones."""
    return Condition(type=type_, status="True" if ok else "False", reason=reason, message=message)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + "…"


def metrics_check(
    target: Tracked, metrics: Digest | None, *, awaiting: int, stale_after: float, now: float
) -> tuple[str, Condition]:
    """The VA's metrics hold reason ("" if usable) and its MetricsAvailable condition."""
    ma = reasons.METRICS_AVAILABLE
    if metrics is None:
        return reasons.HOLD_METRICS_UNAVAILABLE, condition(
            ma, False, reasons.METRICS_MISSING, "no metrics snapshot received yet"
        )
    wanted = max(target.deployment_generation, awaiting)
    if metrics.generation < wanted or (
        metrics.generation == target.deployment_generation and metrics.template_hash != target.template_hash
    ):
        return reasons.HOLD_INVALIDATED, condition(
            ma,
            False,
            reasons.METRICS_STALE,
            f"snapshot of deployment generation {metrics.generation}, the Deployment is at {wanted}",
        )
    if metrics.generation > target.deployment_generation:
        return reasons.HOLD_INVALIDATED, condition(
            ma,
            False,
            reasons.METRICS_STALE,
            f"snapshot of deployment generation {metrics.generation}, newer than the target's "
            f"{target.deployment_generation}: waiting for the target",
        )
    if metrics.age(now) > stale_after:
        return reasons.HOLD_STALE_METRICS, condition(
            ma, False, reasons.METRICS_STALE, f"snapshot {metrics.age(now):.0f}s old, older than {stale_after:g}s"
        )
    if metrics.status == "unavailable":
        return reasons.HOLD_METRICS_UNAVAILABLE, condition(
            ma, False, reasons.PROMETHEUS_ERROR, f"metrics unavailable: {_short(metrics.reason) or 'no reason given'}"
        )
    if metrics.excluded:
        return reasons.HOLD_METRICS_UNAVAILABLE, condition(
            ma,
            False,
            reasons.METRICS_MISSING,
            f"{len(metrics.excluded)} replica(s) without usable values ({metrics.invalid_values} invalid)",
        )
    missing = sorted(p for p in target.ready if p not in metrics.reporting)
    if missing:
        return reasons.HOLD_METRICS_UNAVAILABLE, condition(
            ma, False, reasons.METRICS_MISSING, _short(f"no metrics from ready pod(s) {', '.join(missing)}")
        )
    return "", condition(ma, True, reasons.METRICS_FOUND, "saturation metrics are available")


def check(
    target: Tracked,
    metrics: Digest | None,
    *,
    awaiting: int,
    conflict: Sequence[str],
    stale_after: float,
    now: float,
) -> Check:
    """Everything that keeps this VA (and so its group) from being acted on, most important first."""
    metric_hold, metrics_condition = metrics_check(
        target, metrics, awaiting=awaiting, stale_after=stale_after, now=now
    )
    if target.problems:
        listed = "; ".join(f"{p.field}: {p.message}" for p in target.problems)
        return Check(reasons.HOLD_PROBLEMS, f"{target.name}: {listed}", metrics_condition)
    if not target.resolved:
        why = f"{target.name}: scale target {target.scale_kind} {target.deployment!r} not found"
        return Check(reasons.HOLD_UNRESOLVED, why, metrics_condition)
    if conflict:
        deployment = target.deployment
        why = f"Deployment {deployment} is the scale target of VAs {', '.join(conflict)}: none is actuated"
        return Check(reasons.HOLD_CONFLICT, why, metrics_condition)
    if metric_hold:
        return Check(metric_hold, f"{target.name}: {metrics_condition.message}", metrics_condition)
    return Check("", "", metrics_condition)


def group_hold(checks: Sequence[Check]) -> tuple[str, str]:
    """The group's hold (the highest-priority one of its VAs) and its explanation; ("", "") if none."""
    for rank in reasons.HOLD_PRIORITY:
        for c in checks:
            if c.hold == rank:
                return rank, c.why
    return "", ""
