"""The scaler's deterministic core: ``Scaler.handle(event, now) -> list[Action]``.

Events are the wire messages (``Target``, ``TargetDeleted``, ``MetricsSnapshot``, ``MetricsDeleted``,
``Invalidation``) and the core's own (``Tick``, ``ScaleApplied``/``ScaleFailed``, ``ConfigData``);
``now`` is float seconds (the shell passes its clock, a replay the recorded time). The same events at
the same times always give the same actions: nothing here reads a clock, does I/O or draws a number.

Per model group (namespace, modelID) an evaluation is a small pipeline::

    holds (per VA)  ->  zero rules | analyzer  ->  pacing  ->  bounds  ->  decisions and actions

A hold of one VA holds its whole group and resizes nothing. Outputs:

- ``ScaleAction`` when a VA's count should change, in ``scale`` mode, for a VA that is neither paused
  nor dry-run. Its ``Decision`` waits for the outcome (``ScaleApplied``/``ScaleFailed``), so what is
  published says what really happened; a failure backs off before the next attempt.
- ``Decision`` when a VA's (desired, reason, recommended count) changes, or an outcome arrives; each
  carries its trigger and the stream positions the core had consumed (``cursor``) for exact replay.
- ``StatusAction`` when a VA's status (last decision, conditions) changes.
- ``FetchAction`` on a tick, for a VA whose snapshot is missing, behind its Deployment or old.
- ``ConfigReport``, ``InputWarning``, ``Forget``: for the shell to log, count and clean up.

Several replicas (docs/design.md §11): a core made with a ``replica`` identity owns nothing until its
own ``Ownership`` message says which partitions it holds; it follows every target and snapshot (hot
standby) but evaluates, actuates and writes status only for the groups of those partitions. It keeps
the last decision on ``wva.decisions`` of every VA, whoever made it: when it gains a group it restores
the group's scale-down window from them (the recommendation in force since the latest of them), or,
without one for every VA, starts the window afresh, which delays a scale-down and never speeds one up;
and it announces itself with a decision per VA. A core without ``replica`` owns every group.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Generic, TypeVar, cast, overload

import msgspec

from services.scaler import bounds, choice, holds, outputs, reasons, zero
from services.scaler.actions import (
    Action,
    Condition,
    ConfigReport,
    FetchAction,
    Forget,
    InputWarning,
    ScaleAction,
    StatusAction,
)
from services.scaler.analyzers import Analyzer, GroupView, Recommendation, VariantView
from services.scaler.analyzers.capacity import CapacityAnalyzer, CapacityMemory
from services.scaler.analyzers.saturation import SaturationAnalyzer
from services.scaler.analyzers.slo import SloAnalyzer, SloMemory
from services.scaler.digest import Digest, digest
from services.scaler.events import ConfigData, Event, ScaleApplied, ScaleFailed, Started, Tick
from services.scaler.pacing import LastDecision, Pacing
from services.scaler.scaling_config import DEFAULT_CONFIG, ConfigSet, ScalingConfig, apply_configmap
from services.scaler.tracked import Tracked, tracked
from shared.messages import (
    Cursor,
    Decision,
    DecisionNumbers,
    Evaluation,
    Invalidation,
    MetricsDeleted,
    MetricsSnapshot,
    Ownership,
    ScalerMode,
    Target,
    TargetDeleted,
    VAKey,
    kind_of,
    va_key,
)
from shared.partitions import partition_of

GroupKey = tuple[str, str]  # (namespace, model_id)
_T = TypeVar("_T")

MAX_SKEW: Final = 5.0  # seconds a wire timestamp may run ahead of this clock before it is reported
MAX_ORPHANS: Final = 10_000  # snapshots kept for VAs whose target has not arrived (yet)
MAX_SEEN: Final = 100_000  # last decisions kept (a few dozen bytes each), for take-overs
BACKOFF_FIRST: Final = 5.0  # seconds before retrying a failed scale; doubles per failure
BACKOFF_MAX: Final = 300.0


def backoff(failures: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** max(0, failures - 1)))


@dataclass(frozen=True, slots=True)
class _Pending:
    """A count applied to the Deployment that its Target does not show yet."""

    desired: int
    generation: int


@dataclass(frozen=True, slots=True)
class _Actuating:
    """A ScaleAction the shell is performing, and the decision that waits for its outcome."""

    decision: Decision
    generation: int


class _Rare(msgspec.Struct, frozen=True, gc=False):
    """What a VA has only while something unusual happens (an invalidation ahead of its Target, a
    step in flight or pending, failures, a refusal, a nudge): one shared default until then."""

    awaiting: int = 0  # a generation an invalidation announced before its Target arrived
    pending: _Pending | None = None
    actuating: _Actuating | None = None
    failures: int = 0
    retry_at: float = float("-inf")
    refusal: str = ""  # why the API refused the last step (TargetResolved says so until one works)
    nudged_at: float = float("-inf")


_USUAL: Final = _Rare()  # what every VA shares until one of these fields changes


class _Rarely(Generic[_T]):
    """A field of a VA's :class:`_Rare`, read and written as the VA's own (the hot paths read
    ``va.rare.<field>`` directly: a descriptor's call costs more than the read)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, va: None, owner: type) -> _Rarely[_T]: ...
    @overload
    def __get__(self, va: _VA, owner: type) -> _T: ...
    def __get__(self, va: _VA | None, owner: type) -> _T | _Rarely[_T]:
        return self if va is None else cast(_T, getattr(va.rare, self._name))

    def __set__(self, va: _VA, value: _T) -> None:
        va.rare = msgspec.structs.replace(va.rare, **{self._name: value})


class _VA(msgspec.Struct, gc=False):
    """A tracked VA. Not tracked by the garbage collector (16 bytes less each): it holds immutable
    values and its own _Rare only, none of which refers back to it."""

    target: Tracked  # what the core reads of the VA's Target
    metrics: Digest | None = None
    idle_since: float | None = None  # effective collection time of the first of a run of idle snapshots
    last_decision: outputs.Decided | None = None  # what the core reads of the last one published
    conditions: tuple[Condition, ...] = ()
    transitions: outputs.Transitions = ()
    status: outputs.StatusInputs | None = None  # of the last status emitted
    rare: _Rare = _USUAL

    awaiting = _Rarely[int]()
    pending = _Rarely[_Pending | None]()
    actuating = _Rarely[_Actuating | None]()
    failures = _Rarely[int]()
    retry_at = _Rarely[float]()
    refusal = _Rarely[str]()
    nudged_at = _Rarely[float]()

    @property
    def expected(self) -> int:
        pending = self.rare.pending
        return pending.desired if pending is not None else self.target.spec_replicas


class _VAs(Mapping[VAKey, _VA]):
    """The tracked VAs by namespace, then name: no (namespace, name) tuple kept per VA."""

    __slots__ = ("_by_namespace",)

    def __init__(self) -> None:
        self._by_namespace: dict[str, dict[str, _VA]] = {}

    def get(self, key: VAKey) -> _VA | None:  # type: ignore[override]  # no default: None
        names = self._by_namespace.get(key[0])
        return None if names is None else names.get(key[1])

    def __getitem__(self, key: VAKey) -> _VA:
        return self._by_namespace[key[0]][key[1]]

    def __setitem__(self, key: VAKey, va: _VA) -> None:
        self._by_namespace.setdefault(key[0], {})[key[1]] = va

    def pop(self, key: VAKey) -> _VA | None:
        names = self._by_namespace.get(key[0])
        if names is None:
            return None
        va = names.pop(key[1], None)
        if not names:
            del self._by_namespace[key[0]]
        return va

    def __iter__(self) -> Iterator[VAKey]:
        for namespace, names in self._by_namespace.items():
            for name in names:
                yield va_key(namespace, name)

    def __len__(self) -> int:
        return sum(map(len, self._by_namespace.values()))


@dataclass(slots=True)
class _Group:
    names: list[str] = field(default_factory=list)  # kept sorted
    pacing: Pacing = field(default_factory=Pacing)
    capacity: CapacityMemory = field(default_factory=CapacityMemory)  # what V2 learned of the model
    latency: SloMemory = field(default_factory=SloMemory)  # what the SLO analyzer learned of it


@dataclass(frozen=True, slots=True)
class _Final:
    """One VA's outcome of an evaluation."""

    desired: int
    reason: str
    recommended: int
    bounded: bool


class Scaler:
    """The core. Not thread-safe; the shell feeds it from one task."""

    def __init__(
        self,
        *,
        configs: ConfigSet | None = None,
        base: ScalingConfig = DEFAULT_CONFIG,
        mode: ScalerMode = "scale",
        analyzer: Analyzer | None = None,
        max_skew: float = MAX_SKEW,
        replica: str = "",
    ) -> None:
        self._base = base
        self._configs = configs if configs is not None else ConfigSet(default=base)
        self._mode: ScalerMode = mode
        self._analyzer: Analyzer = analyzer or SaturationAnalyzer()
        self._max_skew = max_skew
        self._vas = _VAs()
        self._groups: dict[GroupKey, _Group] = {}
        self._orphans: OrderedDict[VAKey, tuple[Digest, float | None]] = OrderedDict()
        # namespace -> deployment -> the names of the VAs that target it, sorted: almost always one,
        # kept as the name itself (docs/benchmarks.md, "Memory per tracked VA")
        self._targeting: dict[str, dict[str, str | tuple[str, ...]]] = {}
        self._cursor = dict.fromkeys(_CURSOR_FIELDS, 0)
        self._cursor_shared: Cursor | None = None
        self._trigger = ""
        self._replica = replica
        self._owned: frozenset[int] | None = frozenset() if replica else None  # None: every group
        self._partitions = 1
        self._seen: OrderedDict[VAKey, LastDecision] = OrderedDict()  # last decision on the stream, per VA

    # ------------------------------------------------------------------ public API

    @property
    def configs(self) -> ConfigSet:
        return self._configs

    def last_decision(self, namespace: str, name: str) -> outputs.Decided | None:
        """What the core keeps of the VA's last published decision (desired, reason, applied, …)."""
        va = self._vas.get(va_key(namespace, name))
        return None if va is None else va.last_decision

    def owns(self, key: GroupKey) -> bool:
        """Whether this core decides for the model group ``key`` (namespace, modelID)."""
        return self._owned is None or partition_of(key[0], key[1], self._partitions) in self._owned

    def handle(self, event: Event, now: float, *, seq: int | None = None) -> list[Action]:
        """Apply one event at time ``now``; ``seq`` is its stream sequence, for a wire message."""
        stream = _STREAMS.get(type(event))
        if stream is not None and seq is not None:
            self._cursor[stream] = seq
            self._cursor_shared = None
        self._trigger = _trigger(event)
        if isinstance(event, Tick):
            return self._on_tick(now)
        if isinstance(event, Target):
            return self._on_target(event, now)
        if isinstance(event, MetricsSnapshot):
            return self._on_snapshot(event, now)
        if isinstance(event, Invalidation):
            return self._on_invalidation(event, now)
        if isinstance(event, TargetDeleted):
            return self._on_target_deleted(event, now)
        if isinstance(event, MetricsDeleted):
            return self._on_metrics_deleted(event, now)
        if isinstance(event, ScaleApplied | ScaleFailed):
            return self._on_outcome(event, now)
        if isinstance(event, ConfigData):
            return self._on_config(event, now)
        if isinstance(event, Decision):
            return self._on_decision(event)
        if isinstance(event, Ownership):
            return self._on_ownership(event, now)
        if isinstance(event, Started):
            self._cursor.update(
                start_targets=event.targets, start_metrics=event.metrics, start_events=event.events
            )
            self._cursor_shared = None
            return []
        raise TypeError(f"not a scaler event: {type(event).__name__}")

    # ------------------------------------------------------------------ events

    def _on_tick(self, now: float) -> list[Action]:
        actions = self._evaluate_every(now)
        for key in sorted(self._vas):
            va = self._vas[key]
            if not self.owns((va.target.namespace, va.target.model_id)):
                continue
            config = self._configs.resolve(va.target.namespace, va.target.model_id)
            if self._needs_nudge(va, config, now):
                va.nudged_at = now
                actions.append(FetchAction(namespace=key[0], name=key[1]))
        return actions

    def _needs_nudge(self, va: _VA, config: ScalingConfig, now: float) -> bool:
        """A snapshot that is missing, behind the Deployment, or two fetch intervals old: the fetcher
        may have missed it. At most once per fetch interval (a third of the staleness limit)."""
        stale = config.stale_after_seconds
        if now - va.rare.nudged_at < stale / 3:
            return False
        m, t = va.metrics, va.target
        return m is None or m.generation < max(t.deployment_generation, va.rare.awaiting) or m.age(now) > 2 * stale / 3

    def _on_target(self, message: Target, now: float) -> list[Action]:
        target = tracked(message)  # kept per VA: the fields the core reads, repeated values shared
        key = va_key(target.namespace, target.name)
        va = self._vas.get(key)
        old_group: GroupKey | None = None
        touched: set[GroupKey] = set()
        if va is None:
            va = self._vas[key] = _VA(target=target)
            orphan = self._orphans.pop(key, None)
            if orphan is not None:
                va.metrics, va.idle_since = orphan
        else:
            old_group = (va.target.namespace, va.target.model_id)
            touched |= self._untarget(va.target)
            va.target = target
        touched |= self._retarget(target)
        pending = va.rare.pending
        if pending is not None and (
            target.spec_replicas == pending.desired or target.deployment_generation > pending.generation
        ):
            va.pending = None
        new_group: GroupKey = (target.namespace, target.model_id)
        if old_group != new_group:
            if old_group is not None:
                self._leave(old_group, target.name)
                touched.add(old_group)
            group = self._groups.setdefault(new_group, _Group())
            bisect.insort(group.names, target.name)
            if va.metrics is not None:  # a snapshot that came before its target, or from the old group
                self._observe(new_group, target.name, va.metrics)
        touched.add(new_group)
        return self._evaluate_all(touched, now)

    def _on_target_deleted(self, event: TargetDeleted, now: float) -> list[Action]:
        key = va_key(event.namespace, event.name)
        self._orphans.pop(key, None)
        self._seen.pop(key, None)
        va = self._vas.pop(key)
        if va is None:
            return []
        group: GroupKey = (va.target.namespace, va.target.model_id)
        touched = self._untarget(va.target)
        self._leave(group, event.name)
        touched.add(group)
        return [Forget(namespace=event.namespace, name=event.name), *self._evaluate_all(touched, now)]

    def _on_snapshot(self, snapshot: MetricsSnapshot, now: float) -> list[Action]:
        key = va_key(snapshot.namespace, snapshot.name)
        va = self._vas.get(key)
        names = None if va is None else {p: p for p in va.target.pods}
        metrics = digest(snapshot, received_at=now, names=names, pods=() if va is None else va.target.pods)
        actions: list[Action] = []
        if metrics.skew > self._max_skew:
            actions.append(
                InputWarning(
                    reason="clock_skew",
                    namespace=snapshot.namespace,
                    name=snapshot.name,
                    detail=f"snapshot stamped {metrics.skew:.1f}s ahead of this scaler's clock; using its arrival time",
                )
            )
        if va is None:
            previous = self._orphans.pop(key, None)
            self._orphans[key] = (metrics, _idle(metrics, None if previous is None else previous[1]))
            while len(self._orphans) > MAX_ORPHANS:
                self._orphans.popitem(last=False)
            return actions
        va.metrics = metrics
        va.idle_since = _idle(metrics, va.idle_since)
        group: GroupKey = (va.target.namespace, va.target.model_id)
        self._observe(group, va.target.name, metrics)
        actions.extend(self._evaluate(group, now))
        return actions

    def _on_metrics_deleted(self, event: MetricsDeleted, now: float) -> list[Action]:
        key = va_key(event.namespace, event.name)
        self._orphans.pop(key, None)
        va = self._vas.get(key)
        if va is None:
            return []
        va.metrics, va.idle_since = None, None
        return self._evaluate((va.target.namespace, va.target.model_id), now)

    def _on_invalidation(self, event: Invalidation, now: float) -> list[Action]:
        va = self._vas.get(va_key(event.namespace, event.name))
        if va is None or event.reason == "va_deleted":
            return []  # an unknown VA's Target brings its generation; a deleted one has its tombstone
        if event.deployment_generation <= max(va.rare.awaiting, va.target.deployment_generation):
            return []
        va.awaiting = event.deployment_generation
        return self._evaluate((va.target.namespace, va.target.model_id), now)

    def _on_outcome(self, event: ScaleApplied | ScaleFailed, now: float) -> list[Action]:
        va = self._vas.get(va_key(event.namespace, event.name))
        if va is None or va.actuating is None or va.actuating.decision.desired != event.replicas:
            return []
        waiting, va.actuating = va.actuating, None
        at = _at(now)
        chosen = Evaluation(at=waiting.decision.at, trigger=waiting.decision.trigger, cursor=waiting.decision.cursor)
        if isinstance(event, ScaleApplied):
            decision = msgspec.structs.replace(
                waiting.decision, at=at, applied=True, outcome=event.outcome, trigger=self._trigger,
                cursor=self._cursor_now(), chosen=chosen,
            )  # fmt: skip
            va.failures, va.refusal = 0, ""
            t = va.target
            if not (t.spec_replicas == event.replicas or t.deployment_generation > waiting.generation):
                va.pending = _Pending(desired=event.replicas, generation=waiting.generation)
        else:
            decision = msgspec.structs.replace(
                waiting.decision,
                at=at,
                applied=False,
                outcome=event.outcome,
                detail=f"{waiting.decision.detail}; not applied ({event.outcome}): {event.detail}",
                trigger=self._trigger,
                cursor=self._cursor_now(),
                chosen=chosen,
            )
            va.failures += 1
            va.retry_at = now + backoff(va.failures)
            if event.outcome == "refused":
                va.refusal = event.detail
        va.last_decision = outputs.Decided.of(decision)
        actions: list[Action] = [decision]
        actions.extend(self._status(va, now))
        # The group decides again now that the step has landed (or failed): what it deferred while the
        # step was in flight, and what the new count means.
        actions.extend(self._evaluate((va.target.namespace, va.target.model_id), now))
        return actions

    def _on_config(self, event: ConfigData, now: float) -> list[Action]:
        update = apply_configmap(self._configs, event.data, base=self._base)
        report = ConfigReport(
            applied=update.applied,
            source="none (defaults)" if event.data is None else event.source,
            errors=update.errors,
            warnings=update.warnings,
        )
        if not update.applied:
            return [report]
        self._configs = update.configs
        return [report, *self._evaluate_every(now)]

    def _on_decision(self, decision: Decision) -> list[Action]:
        """A decision on the stream (another replica's, or this one's coming back): the last one per
        VA is what a take-over restores the group's scale-down window from."""
        key = va_key(decision.namespace, decision.name)
        self._seen.pop(key, None)
        self._seen[key] = LastDecision.of(decision)
        while len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
        return []

    def _on_ownership(self, event: Ownership, now: float) -> list[Action]:
        if not self._replica or event.name != self._replica or event.partitions < 1:
            return []  # another replica's
        before = {key for key in self._groups if self.owns(key)}
        self._owned = frozenset(int(p) for p in event.owned if p.isdigit() and int(p) < event.partitions)
        self._partitions = event.partitions
        actions: list[Action] = []
        for key in sorted(k for k in self._groups if self.owns(k) and k not in before):
            self._take_over(key, now)
            actions.extend(self._evaluate(key, now))
        return actions

    def _take_over(self, key: GroupKey, now: float) -> None:
        """A group this core decides for from now on: it says so (a decision and a status per VA),
        steps afresh, and restores the scale-down window where the last decisions allow."""
        group = self._groups[key]
        for name in group.names:
            va = self._vas[va_key(key[0], name)]
            va.last_decision, va.status = None, None
            va.failures, va.retry_at, va.refusal, va.nudged_at = 0, float("-inf"), "", float("-inf")
        group.pacing = Pacing.restored([self._seen.get(va_key(key[0], name)) for name in group.names], key[1], now)

    def _observe(self, key: GroupKey, variant: str, metrics: Digest) -> None:
        """What the analyzers learn from a snapshot (on arrival: a replay rebuilds it in stream order)."""
        group = self._groups[key]
        group.capacity.observe(variant, metrics, self._configs.resolve(*key))
        group.latency.observe(variant, metrics)

    # ------------------------------------------------------------------ membership

    def _leave(self, key: GroupKey, name: str) -> None:
        group = self._groups[key]
        group.names.remove(name)
        if not group.names:
            del self._groups[key]

    def _targeting_of(self, target: Tracked) -> tuple[str, ...]:
        """The names of the VAs that target ``target``'s Deployment, sorted."""
        names = self._targeting.get(target.namespace, {}).get(target.deployment, ())
        return (names,) if isinstance(names, str) else names

    def _set_targeting(self, target: Tracked, names: tuple[str, ...]) -> None:
        by_deployment = self._targeting.setdefault(target.namespace, {})
        if names:
            by_deployment[target.deployment] = names[0] if len(names) == 1 else names
            return
        by_deployment.pop(target.deployment, None)
        if not by_deployment:
            del self._targeting[target.namespace]

    def _retarget(self, target: Tracked) -> set[GroupKey]:
        """Index the Deployment ``target`` names; the groups whose conflicts changed."""
        names = self._targeting_of(target)
        if target.name not in names:
            names = tuple(sorted((*names, target.name)))
            self._set_targeting(target, names)
        return self._groups_of(target.namespace, names) if len(names) > 1 else set()

    def _untarget(self, target: Tracked) -> set[GroupKey]:
        names = tuple(n for n in self._targeting_of(target) if n != target.name)
        self._set_targeting(target, names)
        return self._groups_of(target.namespace, names) if names else set()

    def _groups_of(self, namespace: str, names: Sequence[str]) -> set[GroupKey]:
        found = set()
        for name in names:
            va = self._vas.get(va_key(namespace, name))
            if va is not None:
                found.add((va.target.namespace, va.target.model_id))
        return found

    def _conflict(self, target: Tracked) -> list[str]:
        names = self._targeting_of(target)
        return list(names) if len(names) > 1 else []

    # ------------------------------------------------------------------ evaluation

    def _evaluate_every(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for key in sorted(self._groups):
            actions.extend(self._evaluate(key, now))
        return actions

    def _evaluate_all(self, keys: set[GroupKey], now: float) -> list[Action]:
        actions: list[Action] = []
        for key in sorted(keys):
            if key in self._groups:
                actions.extend(self._evaluate(key, now))
        return actions

    def _evaluate(self, key: GroupKey, now: float) -> list[Action]:
        if not self.owns(key):
            return []  # another replica's group (hot standby: followed, not decided)
        namespace, model_id = key
        group = self._groups[key]
        vas = [self._vas[va_key(namespace, name)] for name in group.names]
        if any(va.rare.actuating is not None for va in vas):
            return []  # decided again when the step in flight has landed
        config = self._configs.resolve(namespace, model_id)
        checks = [
            holds.check(
                va.target,
                va.metrics,
                awaiting=va.rare.awaiting,
                conflict=self._conflict(va.target),
                stale_after=config.stale_after_seconds,
                now=now,
            )
            for va in vas
        ]
        hold, why = holds.group_hold(checks)
        expected = tuple(va.expected for va in vas)
        if hold:
            group.pacing.remember(now, {va.target.name: n for va, n in zip(vas, expected, strict=True)})
            detail = why + _out_of_bounds(vas)
            plan = Recommendation(
                desired=expected,
                reason=hold,
                detail=detail,
                numbers=DecisionNumbers(replicas_total=sum(va.target.spec_replicas for va in vas)),
            )
            finals = [_Final(n, hold, n, False) for n in expected]
        else:
            plan, finals = self._decide(group, vas, config, now)
        return self._act(vas, checks, plan, finals, now, held=bool(hold))

    def _decide(
        self, group: _Group, vas: Sequence[_VA], config: ScalingConfig, now: float
    ) -> tuple[Recommendation, list[_Final]]:
        view = GroupView(
            namespace=vas[0].target.namespace,
            model_id=vas[0].target.model_id,
            variants=tuple(_variant(va) for va in vas),
            config=config,
            now=now,
        )
        idle = _group_idle(vas)
        analyzer: Analyzer = self._analyzer
        if config.analyzer == "v2":
            analyzer = CapacityAnalyzer(group.capacity)
        elif config.analyzer == "slo":
            analyzer = SloAnalyzer(group.latency, group.capacity)
        plan = (
            zero.from_zero(view, group.capacity)
            or zero.to_zero(view, idle_since=idle)
            or analyzer.recommend(view)
        )
        names = [va.target.name for va in vas]
        expected = [v.expected for v in view.variants]
        recommended = dict(zip(names, plan.desired, strict=True))
        group.pacing.remember(now, recommended)
        window = config.scale_down_stabilization_seconds
        group.pacing.forget_before(now - window)
        paced = list(plan.desired)
        if plan.reason != reasons.SCALE_TO_ZERO:  # scale to zero has its own retention window
            highest = group.pacing.highest(now, window, dict(zip(names, expected, strict=True)))
            paced = [
                max(rec, min(cur, highest.get(name, rec)))
                for name, rec, cur in zip(names, plan.desired, expected, strict=True)
            ]
        if paced != list(plan.desired) and all(p <= cur for p, cur in zip(paced, expected, strict=True)):
            held = [(n, rec) for n, rec, p in zip(names, plan.desired, paced, strict=True) if p != rec]
            name, count = held[0]
            since = group.pacing.lower_since(now, name, count)
            detail = (
                f"scale-down of {', '.join(f'{n} to {c}' for n, c in held)} recommended for "
                f"{now - since:g}s of {window:g}s; {plan.detail}"
            )
            plan = Recommendation(desired=plan.desired, reason=reasons.HOLD_STABILIZING, detail=detail, numbers=plan.numbers)
        choices = [
            choice.Variant(v.name, v.cost, v.min_replicas, v.max_replicas, v.expected, v.frozen) for v in view.variants
        ]
        finals = []
        for (count, moved), rec, cur in zip(
            bounds.apply(paced, choices, zero_allowed=config.scale_to_zero.enabled), plan.desired, expected, strict=True
        ):
            reason = {"": plan.reason, "bounds": reasons.BOUNDS_CLAMPED, "floor": reasons.SCALE_UP_FROM_ZERO}[moved]
            if reason == reasons.HOLD_STABILIZING and count < cur:
                reason = reasons.SCALE_DOWN_PACED  # part of the decrease now, the rest still stabilizing
            finals.append(_Final(count, reason, rec, moved == "bounds"))
        return plan, finals

    # ------------------------------------------------------------------ outputs

    def _act(
        self,
        vas: Sequence[_VA],
        checks: Sequence[holds.Check],
        plan: Recommendation,
        finals: Sequence[_Final],
        now: float,
        *,
        held: bool,
    ) -> list[Action]:
        actions: list[Action] = []
        at = _at(now)
        for va, check, final in zip(vas, checks, finals, strict=True):
            t = va.target
            numbers = msgspec.structs.replace(
                plan.numbers, recommended=final.recommended, bounded=plan.numbers.bounded or final.bounded
            )
            allowed = self._mode == "scale" and not t.paused and not t.dry_run and not held
            last = va.last_decision
            changed = (
                last is None
                or last.desired != final.desired
                or last.reason != final.reason
                or last.recommended != final.recommended
            )
            decision = Decision(
                namespace=t.namespace,
                name=t.name,
                at=at,
                model_id=t.model_id,
                accelerator=t.accelerator,
                current=t.spec_replicas,
                desired=final.desired,
                applied=allowed and va.rare.pending is not None and va.rare.pending.desired == final.desired,
                mode="dry-run" if t.dry_run else self._mode,
                reason=final.reason,
                detail=plan.detail,
                numbers=numbers,
                trigger=self._trigger,
                cursor=self._cursor_now(),
                replica=self._replica,
            )
            # Before the step: the status written after its outcome says why this evaluation acted.
            va.conditions = outputs.conditions(
                t, check, group_reason=plan.reason, group_detail=plan.detail, refusal=va.rare.refusal,
                before=va.conditions,
            )
            pending = va.rare.pending
            wanted = final.desired != t.spec_replicas and (pending is None or pending.desired != final.desired)
            if allowed and wanted and now >= va.rare.retry_at:
                actions.append(
                    ScaleAction(
                        namespace=t.namespace,
                        name=t.name,
                        deployment=t.deployment,
                        replicas=final.desired,
                        expected_generation=t.deployment_generation,
                        min_replicas=t.min_replicas,
                        max_replicas=t.max_replicas,
                        model_id=t.model_id,
                    )
                )
                va.actuating = _Actuating(decision=decision, generation=t.deployment_generation)
                continue  # its decision and status follow the outcome
            if changed:
                actions.append(decision)
                va.last_decision = outputs.Decided.of(decision)
            elif last is not None and last.current != t.spec_replicas:
                va.last_decision = msgspec.structs.replace(last, current=t.spec_replicas)
            actions.extend(self._status(va, now))
        return actions

    def _status(self, va: _VA, now: float) -> list[Action]:
        """A StatusAction when the VA's status (last decision, conditions) changed, for a group it owns."""
        if not self.owns((va.target.namespace, va.target.model_id)):
            return []
        va.transitions = outputs.transitions(va.conditions, va.transitions, now=_at(now))
        inputs = outputs.status_inputs(va.target, va.last_decision, va.conditions, va.transitions)
        if inputs == va.status:
            return []
        va.status = inputs
        body = outputs.status(va.target, va.last_decision, va.conditions, va.transitions)
        return [StatusAction(namespace=va.target.namespace, name=va.target.name, status=body, model_id=va.target.model_id)]

    def _cursor_now(self) -> Cursor:
        """The stream positions consumed so far; one object for every decision until one moves."""
        if self._cursor_shared is None:
            self._cursor_shared = Cursor(**self._cursor)
        return self._cursor_shared


# ---------------------------------------------------------------------- helpers

_CURSOR_FIELDS: Final = tuple(Cursor.__struct_fields__)
_STREAMS: Final[dict[type, str]] = {
    Target: "targets",
    TargetDeleted: "targets",
    MetricsSnapshot: "metrics",
    MetricsDeleted: "metrics",
    Invalidation: "events",
    Decision: "events",
    Ownership: "events",
}


def _trigger(event: Event) -> str:
    if isinstance(event, Tick):
        return "tick"
    if isinstance(event, ScaleApplied):
        return "scale_applied"
    if isinstance(event, ScaleFailed):
        return "scale_failed"
    if isinstance(event, ConfigData):
        return "config"
    if isinstance(event, Started):
        return "started"
    return kind_of(event)


def _at(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def _idle(metrics: Digest, since: float | None) -> float | None:
    """Since when the VA has reported no completed and no queued request (None: it reported some, or
    cannot tell)."""
    if metrics.arrival_rate == 0.0 and not metrics.gateway_queue and metrics.status != "unavailable":
        return since if since is not None else metrics.collected_at
    return None


def _group_idle(vas: Sequence[_VA]) -> float | None:
    latest: float | None = None
    for va in vas:
        if va.idle_since is None:
            return None
        latest = va.idle_since if latest is None else max(latest, va.idle_since)
    return latest


def _variant(va: _VA) -> VariantView:
    t = va.target
    assert va.metrics is not None  # only usable groups are analyzed
    return VariantView(
        name=t.name,
        cost=t.variant_cost,
        min_replicas=t.min_replicas,
        max_replicas=t.max_replicas,
        spec=t.spec_replicas,
        ready=t.ready_replicas,
        expected=va.expected,
        frozen=t.paused or t.dry_run,
        metrics=va.metrics,
    )


def _out_of_bounds(vas: Sequence[_VA]) -> str:
    """What a hold leaves out of bounds, corrected once a decision can be made."""
    found = [
        f"{va.target.name} at {va.target.spec_replicas} outside [{va.target.min_replicas}, "
        f"{'∞' if va.target.max_replicas is None else va.target.max_replicas}]"
        for va in vas
        if bounds.outside(va.target.spec_replicas, va.target.min_replicas, va.target.max_replicas)
    ]
    return f"; {', '.join(found)}: corrected once a decision can be made" if found else ""
