"""The scaler's deterministic state machine: ``Scaler.handle(event, now) -> list[Action]``.

Events are the wire messages (``Target``, ``TargetDeleted``, ``MetricsSnapshot``, ``MetricsDeleted``,
``Invalidation``) and ``Tick``; ``now`` is float seconds (the shell passes its clock, a replay the
recorded time). The same events at the same times always give the same actions.

VAs are grouped by (namespace, modelID) and every event re-evaluates the affected group (a ``Tick``
all groups). One evaluation yields, per VA of the group, a desired replica count and a reason code;
at most one scaling step per group per evaluation. Outputs:

- ``Decision`` — only when a VA's (desired, reason) pair changes, so the shell can publish every
  Decision it gets. ``Scaler.last_decision`` gives the current one of a VA at any time.
- ``ScaleAction`` — when desired differs from the spec replicas, the mode is ``scale`` and the VA is
  neither paused nor dry-run; sent once per desired count (it is then *pending* until a Target shows
  that count or a newer Deployment generation; a pending count expires after
  ``PENDING_EXPIRY_SECONDS`` or :meth:`Scaler.forget_pending`, so a failed patch is retried).
- ``FetchAction`` — for every invalidation (except ``va_deleted``).
- ``StatusAction`` — when a VA's conditions (TargetResolved, MetricsAvailable, OptimizationReady)
  change.

Reason of a VA: the group's reason (a hold caused by one VA holds every VA of its group, and the
variant not chosen for a step carries the step's reason with ``numbers.chosen_variant`` naming where
it went), except ``bounds_clamped`` for a VA whose count was moved into its bounds.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import msgspec

from services.scaler import choice, reasons, saturation
from services.scaler.actions import Action, Condition, Event, FetchAction, ScaleAction, StatusAction, Tick
from services.scaler.scaling_config import ConfigSet, ScalingConfig
from shared.messages import (
    Decision,
    DecisionNumbers,
    Invalidation,
    MetricsDeleted,
    MetricsSnapshot,
    ScalerMode,
    Target,
    TargetDeleted,
    kind_of,
)

PENDING_EXPIRY_SECONDS: Final = 300.0

GroupKey = tuple[str, str]  # (namespace, model_id)
VAKey = tuple[str, str]  # (namespace, name)

_NO_METRIC_HOLDS: Final = frozenset({reasons.HOLD_PROBLEMS, reasons.HOLD_UNRESOLVED})
_METRIC_HOLDS: Final = frozenset(
    {reasons.HOLD_METRICS_UNAVAILABLE, reasons.HOLD_INVALIDATED, reasons.HOLD_STALE_METRICS}
)


@dataclass(frozen=True, slots=True)
class _Metrics:
    """A snapshot digested once on arrival: valid (kv, queue) pairs and what was left out."""

    collected_at: float
    generation: int
    status: str
    reason: str
    loads: tuple[tuple[float, float], ...]
    excluded: int  # replicas left out for missing or invalid values
    invalid_values: int  # NaN/inf/negative values seen here plus those the fetcher dropped
    arrival_rate: float | None


def _valid(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0.0


def _digest(snapshot: MetricsSnapshot) -> _Metrics:
    loads: list[tuple[float, float]] = []
    excluded = 0
    invalid = snapshot.dropped_values
    for replica in snapshot.replicas:
        kv, queue = replica.kv_cache_usage, replica.waiting
        invalid += sum(1 for v in (kv, queue) if v is not None and not _valid(v))
        if kv is not None and queue is not None and _valid(kv) and _valid(queue):
            loads.append((kv, queue))
        else:
            excluded += 1
    rate = snapshot.allocation.arrival_rate
    if rate is not None and not _valid(rate):
        invalid += 1
        rate = None
    return _Metrics(
        collected_at=snapshot.collected_at.timestamp(),
        generation=snapshot.deployment_generation,
        status=snapshot.status,
        reason=snapshot.reason,
        loads=tuple(loads),
        excluded=excluded,
        invalid_values=invalid,
        arrival_rate=rate,
    )


@dataclass(slots=True)
class _Pending:
    desired: int
    generation: int
    since: float


@dataclass(slots=True)
class _VA:
    target: Target | None = None
    metrics: _Metrics | None = None
    invalidated_at: float | None = None
    idle_since: float | None = None  # collected_at of the first of an unbroken run of zero arrival rates
    pending: _Pending | None = None
    group: GroupKey | None = None
    last_decision: Decision | None = None
    last_conditions: tuple[Condition, ...] | None = None


@dataclass(slots=True)
class _Group:
    names: list[str] = field(default_factory=list)  # kept sorted
    safe_since: float | None = None  # since when scale-down has been continuously safe


@dataclass(slots=True)
class _Plan:
    """The outcome of one group evaluation, before bounds and actions."""

    desired: list[int]
    reason: str
    detail: str
    numbers: DecisionNumbers


def _condition(type_: str, ok: bool, reason: str, message: str) -> Condition:
    return Condition(type=type_, status="True" if ok else "False", reason=reason, message=message)


class Scaler:
    """The core. Not thread-safe; the shell feeds it from one task."""

    def __init__(self, *, configs: ConfigSet | None = None, mode: ScalerMode = "scale") -> None:
        self._configs = configs if configs is not None else ConfigSet()
        self._mode: ScalerMode = mode
        self._vas: dict[VAKey, _VA] = {}
        self._groups: dict[GroupKey, _Group] = {}

    # ------------------------------------------------------------------ public API

    def set_configs(self, configs: ConfigSet) -> None:
        """Use a new configuration from the next evaluation on (e.g. a ``Tick``)."""
        self._configs = configs

    def forget_pending(self, namespace: str, name: str) -> None:
        """The shell could not apply a ScaleAction: let the next evaluation decide afresh."""
        va = self._vas.get((namespace, name))
        if va is not None:
            va.pending = None

    def last_decision(self, namespace: str, name: str) -> Decision | None:
        va = self._vas.get((namespace, name))
        return None if va is None else va.last_decision

    def handle(self, event: Event, now: float) -> list[Action]:
        actions = self._handle(event, now)
        trigger = "tick" if isinstance(event, Tick) else kind_of(event)
        return [
            msgspec.structs.replace(a, trigger=trigger) if isinstance(a, Decision) else a for a in actions
        ]

    def _handle(self, event: Event, now: float) -> list[Action]:
        if isinstance(event, Tick):
            actions: list[Action] = []
            for key in sorted(self._groups):
                actions.extend(self._evaluate(key, now))
            return actions
        if isinstance(event, Target):
            return self._on_target(event, now)
        if isinstance(event, MetricsSnapshot):
            return self._on_snapshot(event, now)
        if isinstance(event, Invalidation):
            return self._on_invalidation(event, now)
        if isinstance(event, TargetDeleted):
            return self._on_target_deleted(event, now)
        if isinstance(event, MetricsDeleted):
            va = self._vas.get((event.namespace, event.name))
            if va is not None:
                va.metrics, va.idle_since = None, None
                if va.target is not None and va.group is not None:
                    return self._evaluate(va.group, now)
            return []
        raise TypeError(f"not a scaler event: {type(event).__name__}")

    # ------------------------------------------------------------------ events

    def _on_target(self, target: Target, now: float) -> list[Action]:
        va = self._vas.setdefault((target.namespace, target.name), _VA())
        va.target = target
        pending = va.pending
        if pending is not None and (
            target.spec_replicas == pending.desired or target.deployment_generation > pending.generation
        ):
            va.pending = None
        new_group: GroupKey = (target.namespace, target.model_id)
        old_group = va.group
        actions: list[Action] = []
        if old_group != new_group:
            if old_group is not None:
                self._leave(old_group, target.name)
            bisect.insort(self._groups.setdefault(new_group, _Group()).names, target.name)
            va.group = new_group
            if old_group is not None and old_group in self._groups:
                actions.extend(self._evaluate(old_group, now))
        actions.extend(self._evaluate(new_group, now))
        return actions

    def _on_target_deleted(self, event: TargetDeleted, now: float) -> list[Action]:
        va = self._vas.pop((event.namespace, event.name), None)
        if va is None or va.group is None:
            return []
        self._leave(va.group, event.name)
        return self._evaluate(va.group, now) if va.group in self._groups else []

    def _leave(self, key: GroupKey, name: str) -> None:
        group = self._groups[key]
        group.names.remove(name)
        if not group.names:
            del self._groups[key]

    def _on_snapshot(self, snapshot: MetricsSnapshot, now: float) -> list[Action]:
        va = self._vas.setdefault((snapshot.namespace, snapshot.name), _VA())
        metrics = _digest(snapshot)
        if va.metrics is not None and metrics.collected_at < va.metrics.collected_at:
            return []  # an older snapshot arriving late changes nothing
        va.metrics = metrics
        if metrics.arrival_rate == 0.0 and metrics.status != "unavailable":
            if va.idle_since is None:
                va.idle_since = metrics.collected_at
        else:
            va.idle_since = None
        if va.target is None or va.group is None:
            return []
        return self._evaluate(va.group, now)

    def _on_invalidation(self, event: Invalidation, now: float) -> list[Action]:
        va = self._vas.setdefault((event.namespace, event.name), _VA())
        at = event.at.timestamp()
        if va.invalidated_at is None or at > va.invalidated_at:
            va.invalidated_at = at
        if event.reason == "va_deleted":
            return []
        actions: list[Action] = [FetchAction(namespace=event.namespace, name=event.name)]
        if va.target is not None and va.group is not None:
            actions.extend(self._evaluate(va.group, now))
        return actions

    # ------------------------------------------------------------------ evaluation

    def _metrics_check(self, va: _VA, target: Target, config: ScalingConfig, now: float) -> tuple[str, Condition]:
        """The VA's own metrics hold reason ("" if usable) and its MetricsAvailable condition."""
        m = va.metrics
        ma = reasons.METRICS_AVAILABLE
        if m is None:
            return reasons.HOLD_METRICS_UNAVAILABLE, _condition(
                ma, False, reasons.METRICS_MISSING, "no metrics snapshot received yet"
            )
        if va.invalidated_at is not None and m.collected_at < va.invalidated_at:
            return reasons.HOLD_INVALIDATED, _condition(
                ma, False, reasons.METRICS_STALE, "snapshot collected before the latest invalidation"
            )
        if m.generation < target.deployment_generation:
            return reasons.HOLD_INVALIDATED, _condition(
                ma,
                False,
                reasons.METRICS_STALE,
                f"snapshot of deployment generation {m.generation}, target at {target.deployment_generation}",
            )
        if now - m.collected_at > config.stale_after_seconds:
            return reasons.HOLD_STALE_METRICS, _condition(
                ma, False, reasons.METRICS_STALE, f"snapshot older than {config.stale_after_seconds:g}s"
            )
        if m.status == "unavailable":
            return reasons.HOLD_METRICS_UNAVAILABLE, _condition(
                ma, False, reasons.PROMETHEUS_ERROR, f"metrics unavailable: {m.reason or 'no reason given'}"
            )
        if m.excluded:
            return reasons.HOLD_METRICS_UNAVAILABLE, _condition(
                ma,
                False,
                reasons.METRICS_MISSING,
                f"{m.excluded} replica(s) without usable values ({m.invalid_values} invalid)",
            )
        if m.status == "partial" and len(m.loads) < target.spec_replicas:
            return reasons.HOLD_METRICS_UNAVAILABLE, _condition(
                ma, False, reasons.METRICS_MISSING, f"partial snapshot: {m.reason or 'replicas missing'}"
            )
        return "", _condition(ma, True, reasons.METRICS_FOUND, "saturation metrics are available")

    def _evaluate(self, key: GroupKey, now: float) -> list[Action]:
        namespace, model_id = key
        config = self._configs.resolve(namespace, model_id)
        vas = [self._vas[(namespace, name)] for name in self._groups[key].names]
        targets: list[Target] = []
        for va in vas:
            assert va.target is not None  # group members always have a target
            targets.append(va.target)
            if va.pending is not None and now - va.pending.since > PENDING_EXPIRY_SECONDS:
                va.pending = None
        checks = [self._metrics_check(va, t, config, now) for va, t in zip(vas, targets, strict=True)]

        # Per-VA holds; the highest-priority one found holds the whole group.
        hold, culprit = "", ""
        for rank in reasons.HOLD_PRIORITY:
            for t, (metric_hold, condition) in zip(targets, checks, strict=True):
                own = (
                    reasons.HOLD_PROBLEMS
                    if t.problems
                    else reasons.HOLD_UNRESOLVED
                    if not t.resolved
                    else metric_hold
                )
                if own == rank:
                    hold = rank
                    culprit = self._culprit(t, condition)
                    break
            if hold:
                break

        group = self._groups[key]
        if hold:
            group.safe_since = None
            plan = self._holding(vas, targets, hold, culprit)
        else:
            plan = self._transition(vas, targets) or self._decide(group, vas, targets, config, now)
        return self._act(vas, targets, checks, plan, config, now)

    @staticmethod
    def _culprit(target: Target, metrics_condition: Condition) -> str:
        if target.problems:
            listed = "; ".join(f"{p.field}: {p.message}" for p in target.problems)
            return f"{target.name}: {listed}"
        if not target.resolved:
            st = target.scale_target
            return f"{target.name}: scale target {st.kind} {st.name or target.name!r} not found"
        return f"{target.name}: {metrics_condition.message}"

    @staticmethod
    def _holding(vas: list[_VA], targets: list[Target], reason: str, detail: str) -> _Plan:
        desired = [
            va.pending.desired if va.pending is not None else t.spec_replicas
            for va, t in zip(vas, targets, strict=True)
        ]
        total = sum(t.spec_replicas for t in targets)
        return _Plan(desired=desired, reason=reason, detail=detail, numbers=DecisionNumbers(replicas_total=total))

    def _transition(self, vas: list[_VA], targets: list[Target]) -> _Plan | None:
        for va, t in zip(vas, targets, strict=True):
            reporting = len(va.metrics.loads) if va.metrics is not None else 0
            if t.spec_replicas != t.ready_replicas:
                why = f"{t.name}: {t.ready_replicas} of {t.spec_replicas} replicas ready"
            elif reporting != t.spec_replicas:
                why = f"{t.name}: {reporting} replicas report metrics, spec has {t.spec_replicas}"
            elif va.pending is not None:
                why = f"{t.name}: last desired {va.pending.desired} not reached yet (spec {t.spec_replicas})"
            else:
                continue
            self._groups[(t.namespace, t.model_id)].safe_since = None
            return self._holding(vas, targets, reasons.HOLD_TRANSITION, why)
        return None

    def _decide(
        self, group: _Group, vas: list[_VA], targets: list[Target], config: ScalingConfig, now: float
    ) -> _Plan:
        variants = [
            choice.Variant(
                name=t.name,
                cost=t.variant_cost,
                min_replicas=t.min_replicas,
                max_replicas=t.max_replicas,
                current=t.spec_replicas,
                frozen=t.paused or t.dry_run,
            )
            for t in targets
        ]
        desired = [v.current for v in variants]
        total = sum(desired)
        loads = [load for va in vas if va.metrics is not None for load in va.metrics.loads]
        analysis = saturation.analyze(loads, config)
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
        stz = config.scale_to_zero
        if total == 0:
            group.safe_since = None
            if stz.enabled and not any(
                va.metrics is not None and (va.metrics.arrival_rate or 0.0) > 0.0 for va in vas
            ):
                return _Plan(desired, reasons.SCALE_TO_ZERO, "at zero; no request reported", numbers)
            return self._from_zero(variants, desired, numbers)
        if stz.enabled and self._idle(vas, stz.retention_seconds, now):
            to_zero = [i for i, v in enumerate(variants) if v.min_replicas == 0 and v.current > 0]
            if to_zero:
                group.safe_since = None
                for i in to_zero:
                    desired[i] = 0
                chosen = ",".join(variants[i].name for i in to_zero)
                numbers = msgspec.structs.replace(numbers, chosen_variant=chosen)
                detail = f"no request for {stz.retention_seconds:g}s; {chosen} to zero"
                return _Plan(desired, reasons.SCALE_TO_ZERO, detail, numbers)
        if analysis.scale_up:
            group.safe_since = None
            needed, step = saturation.scale_up_step(analysis, config, total)
            added = choice.distribute_scale_up(variants, step)
            numbers = msgspec.structs.replace(numbers, needed=needed, step=step)
            if not added:
                return _Plan(desired, reasons.HOLD_AT_BOUNDS, f"scale-up wanted, every variant at maxReplicas; {figures}", numbers)
            for i, v in enumerate(variants):
                desired[i] += added.get(v.name, 0)
            chosen = ",".join(added)
            placed = sum(added.values())
            numbers = msgspec.structs.replace(numbers, chosen_variant=chosen, bounded=placed < step)
            steps = ", ".join(f"+{n} on {name}" for name, n in added.items())
            detail = f"{steps}; {figures}" + (f"; needed {needed}, step {step}" if needed is not None else "")
            return _Plan(desired, reasons.SCALE_UP_REASONS[analysis.trigger], detail, numbers)
        if not analysis.scale_down_safe:
            group.safe_since = None
            return _Plan(desired, reasons.HOLD_NO_TRIGGER, figures, numbers)
        if group.safe_since is None:
            group.safe_since = now
        waited = now - group.safe_since
        window = config.scale_down_stabilization_seconds
        if waited < window - saturation.EPSILON:
            return _Plan(desired, reasons.HOLD_STABILIZING, f"scale-down safe for {waited:g}s of {window:g}s; {figures}", numbers)
        victim = choice.choose_scale_down(variants)
        if victim is None:
            detail = f"scale-down safe, no variant above max(minReplicas, 1); {figures}"
            return _Plan(desired, reasons.HOLD_AT_BOUNDS, detail, numbers)
        group.safe_since = None
        desired[variants.index(victim)] -= 1
        numbers = msgspec.structs.replace(numbers, step=-1, chosen_variant=victim.name)
        return _Plan(desired, reasons.SCALE_DOWN_SPARE_CAPACITY, f"-1 on {victim.name}; {figures}", numbers)

    @staticmethod
    def _idle(vas: list[_VA], retention: float, now: float) -> bool:
        latest = 0.0
        for va in vas:
            if va.idle_since is None:
                return False
            latest = max(latest, va.idle_since)
        return now - latest >= retention - saturation.EPSILON

    @staticmethod
    def _from_zero(variants: list[choice.Variant], desired: list[int], numbers: DecisionNumbers) -> _Plan:
        first = choice.cheapest(variants)
        if first is None:
            return _Plan(desired, reasons.HOLD_AT_BOUNDS, "at zero; no variant may run a replica", numbers)
        desired[variants.index(first)] = 1
        numbers = msgspec.structs.replace(numbers, step=1, chosen_variant=first.name)
        return _Plan(desired, reasons.SCALE_UP_FROM_ZERO, f"group at zero; +1 on cheapest {first.name}", numbers)

    # ------------------------------------------------------------------ bounds and actions

    def _act(
        self,
        vas: list[_VA],
        targets: list[Target],
        checks: list[tuple[str, Condition]],
        plan: _Plan,
        config: ScalingConfig,
        now: float,
    ) -> list[Action]:
        desired = plan.desired
        per_va_reason = [plan.reason] * len(vas)
        if plan.reason not in _NO_METRIC_HOLDS:
            for i, t in enumerate(targets):
                bounded = choice.clamp(desired[i], t.min_replicas, t.max_replicas)
                if bounded != desired[i]:
                    desired[i], per_va_reason[i] = bounded, reasons.BOUNDS_CLAMPED
            if not config.scale_to_zero.enabled and sum(desired) == 0:
                variants = [
                    choice.Variant(t.name, t.variant_cost, t.min_replicas, t.max_replicas, 0) for t in targets
                ]
                first = choice.cheapest(variants)
                if first is not None:
                    i = variants.index(first)
                    desired[i], per_va_reason[i] = 1, reasons.SCALE_UP_FROM_ZERO

        actions: list[Action] = []
        at: datetime | None = None
        for i, (va, t) in enumerate(zip(vas, targets, strict=True)):
            want, reason = desired[i], per_va_reason[i]
            allowed = not t.paused and not t.dry_run and reason not in _NO_METRIC_HOLDS
            if want != t.spec_replicas and allowed and (va.pending is None or va.pending.desired != want):
                if self._mode == "scale":
                    actions.append(
                        ScaleAction(
                            namespace=t.namespace,
                            name=t.name,
                            deployment=t.scale_target.name or t.name,
                            replicas=want,
                            expected_generation=t.deployment_generation,
                        )
                    )
                if self._mode != "dry-run":
                    va.pending = _Pending(desired=want, generation=t.deployment_generation, since=now)
            applied = (
                self._mode == "scale" and allowed and va.pending is not None and va.pending.desired == want
            )
            last = va.last_decision
            if last is None or last.desired != want or last.reason != reason or last.current != t.spec_replicas:
                if at is None:
                    at = datetime.fromtimestamp(now, UTC)
                numbers = plan.numbers
                if reason == reasons.BOUNDS_CLAMPED:
                    numbers = msgspec.structs.replace(numbers, bounded=True)
                decision = Decision(
                    namespace=t.namespace,
                    name=t.name,
                    at=at,
                    model_id=t.model_id,
                    accelerator=t.accelerator,
                    current=t.spec_replicas,
                    desired=want,
                    applied=applied,
                    mode="dry-run" if t.dry_run else self._mode,
                    reason=reason,
                    detail=plan.detail,
                    numbers=numbers,
                )
                if last is None or last.desired != want or last.reason != reason:
                    actions.append(decision)
                va.last_decision = decision
            conditions = self._conditions(t, checks[i][1], plan.reason, plan.detail)
            if conditions != va.last_conditions:
                va.last_conditions = conditions
                actions.append(StatusAction(namespace=t.namespace, name=t.name, conditions=conditions))
        return actions

    @staticmethod
    def _conditions(target: Target, metrics: Condition, reason: str, detail: str) -> tuple[Condition, ...]:
        if target.resolved:
            resolved = _condition(reasons.TARGET_RESOLVED, True, reasons.SCALE_TARGET_FOUND, "scale target found")
        else:
            st = target.scale_target
            resolved = _condition(
                reasons.TARGET_RESOLVED,
                False,
                reasons.SCALE_TARGET_NOT_FOUND,
                f"scale target {st.kind} {st.name or target.name} not found",
            )
        if reason in _NO_METRIC_HOLDS:
            ready = _condition(reasons.OPTIMIZATION_READY, False, reasons.OPTIMIZATION_FAILED, f"{reason}: {detail}")
        elif reason in _METRIC_HOLDS:
            ready = _condition(
                reasons.OPTIMIZATION_READY, False, reasons.METRICS_UNAVAILABLE, f"{reason}: {detail}"
            )
        else:
            ready = _condition(reasons.OPTIMIZATION_READY, True, reasons.OPTIMIZATION_SUCCEEDED, reason)
        return (resolved, metrics, ready)
