"""Small builders of wire messages for the scaler's tests. Times are float seconds since the epoch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from services.scaler.actions import Action, FetchAction, ScaleAction, StatusAction
from services.scaler.core import Scaler
from services.scaler.events import Event, ScaleApplied
from shared.messages import (
    AllocationMetrics,
    Decision,
    Invalidation,
    InvalidationReason,
    MetricsSnapshot,
    Problem,
    ReplicaMetrics,
    ScaleTarget,
    SnapshotStatus,
    Target,
)

NS = "llm"
MODEL = "meta/llama"


def dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def target(
    name: str,
    *,
    replicas: int = 1,
    ready: int | None = None,
    cost: float = 10.0,
    min_replicas: int = 1,
    max_replicas: int | None = None,
    generation: int = 1,
    model: str = MODEL,
    ns: str = NS,
    deployment: str | None = None,
    paused: bool = False,
    dry_run: bool = False,
    resolved: bool = True,
    problems: Sequence[Problem] = (),
    t: float = 0.0,
) -> Target:
    return Target(
        namespace=ns,
        name=name,
        at=dt(t),
        model_id=model,
        variant_cost=cost,
        accelerator="H100",
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_target=ScaleTarget(name=deployment or f"{name}-deploy"),
        resolved=resolved,
        deployment_generation=generation,
        spec_replicas=replicas,
        ready_replicas=replicas if ready is None else ready,
        paused=paused,
        dry_run=dry_run,
        problems=tuple(problems),
    )


def snapshot(
    name: str,
    kv: Sequence[float | None],
    *,
    at: float,
    waiting: Sequence[float | None] | None = None,
    generation: int = 1,
    status: SnapshotStatus = "ok",
    rate: float | None = 1.0,
    model: str = MODEL,
    ns: str = NS,
) -> MetricsSnapshot:
    queues = list(waiting) if waiting is not None else [0.0] * len(kv)
    return MetricsSnapshot(
        namespace=ns,
        name=name,
        at=dt(at),
        model_id=model,
        collected_at=dt(at),
        deployment_generation=generation,
        status=status,
        allocation=AllocationMetrics(arrival_rate=rate),
        replicas=tuple(
            ReplicaMetrics(pod=f"{name}-{i}", kv_cache_usage=k, waiting=q)
            for i, (k, q) in enumerate(zip(kv, queues, strict=True))
        ),
    )


def invalidation(
    name: str, *, at: float, reason: InvalidationReason = "replicas_changed", generation: int = 1
) -> Invalidation:
    return Invalidation(namespace=NS, name=name, at=dt(at), reason=reason, deployment_generation=generation)


def feed(scaler: Scaler, events: Sequence[tuple[float, Event]], *, apply: bool = True) -> list[Action]:
    """Every action of the events in order. ``apply``: answer each ScaleAction with ScaleApplied at
    once, as a shell whose PATCH succeeds does (its actions follow the ScaleAction's)."""
    actions: list[Action] = []
    for now, event in events:
        pending = scaler.handle(event, now)
        while pending:
            actions.extend(pending)
            outcomes = [a for a in pending if isinstance(a, ScaleAction)] if apply else []
            pending = [r for a in outcomes for r in scaler.handle(ScaleApplied(a.namespace, a.name, a.replicas), now)]
    return actions


def decisions(actions: Sequence[Action]) -> list[Decision]:
    return [a for a in actions if isinstance(a, Decision)]


def summary(actions: Sequence[Action]) -> list[tuple[str, int, str]]:
    """(name, desired, reason) of each Decision, in order."""
    return [(d.name, d.desired, d.reason) for d in decisions(actions)]


def scales(actions: Sequence[Action]) -> list[ScaleAction]:
    return [a for a in actions if isinstance(a, ScaleAction)]


def fetches(actions: Sequence[Action]) -> list[FetchAction]:
    return [a for a in actions if isinstance(a, FetchAction)]


def statuses(actions: Sequence[Action]) -> list[StatusAction]:
    return [a for a in actions if isinstance(a, StatusAction)]
