"""Write the replay scenarios of this directory: ``python -m tests.replay.make_replays``.

The events are built here; the expected decisions are written down by hand from docs/algorithms.md (the
arithmetic is in the comments and in each file's notes), never taken from the scaler's output. The
files are committed; ``test_replay.py`` checks that the scaler still produces exactly these decisions.
Defaults throughout: kvCacheThreshold 0.80, queueLengthThreshold 5, kvSpareTrigger 0.10,
queueSpareTrigger 3, proportional steps capped at 4, 120 s stabilization, 45 s staleness.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from shared.messages import (
    AllocationMetrics,
    Invalidation,
    MetricsSnapshot,
    ReplicaMetrics,
    ScaleTarget,
    Target,
    encode,
)

HERE = Path(__file__).parent
NS = "llm"
MODEL = "meta/llama-3.1-8b"


def dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def target(
    name: str, t: float, *, cost: float, replicas: int, ready: int | None = None, gen: int = 1, max_r: int | None = None
) -> Target:
    return Target(
        namespace=NS,
        name=name,
        at=dt(t),
        model_id=MODEL,
        variant_cost=cost,
        accelerator="H100" if cost > 50 else "L40S",
        min_replicas=1,
        max_replicas=max_r,
        scale_target=ScaleTarget(name=name),
        resolved=True,
        deployment_generation=gen,
        spec_replicas=replicas,
        ready_replicas=replicas if ready is None else ready,
    )


def snap(name: str, t: float, kv: list[float], waiting: list[float] | None = None, *, gen: int = 1) -> MetricsSnapshot:
    queues = waiting if waiting is not None else [0.0] * len(kv)
    return MetricsSnapshot(
        namespace=NS,
        name=name,
        at=dt(t),
        model_id=MODEL,
        collected_at=dt(t),
        deployment_generation=gen,
        allocation=AllocationMetrics(arrival_rate=2.0),
        replicas=tuple(
            ReplicaMetrics(pod=f"{name}-{i}", kv_cache_usage=k, waiting=q, running=1.0)
            for i, (k, q) in enumerate(zip(kv, queues, strict=True))
        ),
    )


class Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(json.dumps({"note": text}))

    def event(self, t: float, message: msgspec.Struct | None = None) -> None:
        payload = json.loads(encode(message)) if message is not None else {"kind": "tick"}
        self.lines.append(json.dumps({"t": t, "event": payload}, separators=(",", ":")))

    def outcome(self, t: float, kind: str, name: str, replicas: int, **fields: Any) -> None:
        payload = {"kind": kind, "namespace": NS, "name": name, "replicas": replicas, **fields}
        self.lines.append(json.dumps({"t": t, "event": payload}, separators=(",", ":")))

    def expect(self, t: float, *decisions: tuple[str, int, str], **extra: Any) -> None:
        for name, desired, reason in decisions:
            fields: dict[str, Any] = {"namespace": NS, "name": name, "desired": desired, "reason": reason, **extra}
            self.lines.append(json.dumps({"t": t, "expect": fields}))

    def save(self, filename: str) -> None:
        (HERE / filename).write_text("\n".join(self.lines) + "\n")


def burst_two_variants() -> Writer:
    w = Writer()
    w.note("Burst on two variants: a (cost 40, max 3) and b (cost 80), one replica each; proportional step.")
    w.event(0, target("a", 0, cost=40, replicas=1, max_r=3))
    w.expect(0, ("a", 1, "hold_metrics_unavailable"))
    w.event(0, target("b", 0, cost=80, replicas=1, max_r=10))
    w.expect(0, ("b", 1, "hold_metrics_unavailable"))
    w.event(0, snap("a", 0, [0.65]))
    w.event(0, snap("b", 0, [0.72]))
    w.note("t=0: spare KV 0.15 and 0.08, average 0.115 >= 0.10; load 0.685 -> 1.37 with one fewer: hold.")
    w.expect(0, ("a", 1, "hold_no_trigger"), ("b", 1, "hold_no_trigger"))
    w.note(
        "t=15: a saturates (KV 0.95, 12 waiting); b still at 0.72: the only non-saturated replica, spare 0.08 "
        "< 0.10. needed = max(ceil(1.67 / 0.70) = 3, ceil(12 / 2) = 6) = 6, step 6 - 2 = 4 (cap 4): "
        "a +2 up to its max 3, then b +2."
    )
    w.event(15, snap("a", 15, [0.95], [12]))
    w.note(
        "Each decision is published once its step has landed (the replay applies steps at once), then the "
        "group decides again: both variants now have a desired count not reached yet."
    )
    w.expect(15, ("a", 3, "scale_up_spare_kv_low"), ("b", 3, "scale_up_spare_kv_low"))
    w.expect(15, ("a", 3, "hold_transition"), ("b", 3, "hold_transition"))
    w.note("b's snapshot of the same instant changes nothing: still in transition.")
    w.event(15, snap("b", 15, [0.90], [8]))
    w.note("t=20: the Deployments moved to generation 2; the snapshots are of generation 1.")
    w.event(20, target("a", 20, cost=40, replicas=3, ready=1, gen=2, max_r=3))
    w.expect(20, ("a", 3, "hold_invalidated"), ("b", 3, "hold_invalidated"))
    w.event(20, target("b", 20, cost=80, replicas=3, ready=1, gen=2, max_r=10))
    w.note("t=30: fresh snapshots, but only 1 of 3 replicas ready in each variant.")
    w.event(30, snap("a", 30, [0.90], [9], gen=2))
    w.event(30, snap("b", 30, [0.85], [7], gen=2))
    w.expect(30, ("a", 3, "hold_transition"), ("b", 3, "hold_transition"))
    w.event(60, target("a", 60, cost=40, replicas=3, gen=2, max_r=3))
    w.event(60, target("b", 60, cost=80, replicas=3, gen=2, max_r=10))
    w.note(
        "t=75: six replicas report. Spare KV 0.30 0.25 0.20 0.35 0.30 0.25, average 0.275; spare queue 4. "
        "One fewer: KV load 0.525 -> 0.63, spare 0.17 >= 0.10; queue load 1 -> 1.2, spare 3.8 >= 3: safe, "
        "so the scale-down window starts."
    )
    w.event(75, snap("a", 75, [0.50, 0.55, 0.60], [1, 1, 1], gen=2))
    w.event(75, snap("b", 75, [0.45, 0.50, 0.55], [1, 1, 1], gen=2))
    w.expect(75, ("a", 3, "hold_stabilizing"), ("b", 3, "hold_stabilizing"))
    return w


def scale_down_after_stabilization() -> Writer:
    w = Writer()
    w.note("Scale-down after stabilization: a (cost 40) and b (cost 80), two replicas each, little load.")
    w.event(0, target("a", 0, cost=40, replicas=2))
    w.expect(0, ("a", 2, "hold_metrics_unavailable"))
    w.event(0, target("b", 0, cost=80, replicas=2))
    w.expect(0, ("b", 2, "hold_metrics_unavailable"))
    w.note(
        "t=0: spare KV 0.60 0.55 0.65 0.70, average 0.625; load 0.175 -> 0.233 with one fewer, spare 0.567 "
        ">= 0.10; queue spare 5: safe, window starts."
    )
    w.event(0, snap("a", 0, [0.20, 0.25]))
    w.event(0, snap("b", 0, [0.15, 0.10]))
    w.expect(0, ("a", 2, "hold_stabilizing"), ("b", 2, "hold_stabilizing"))
    for t in (30, 60, 90):
        w.event(t, snap("a", t, [0.20, 0.25]))
        w.event(t, snap("b", t, [0.15, 0.10]))
        w.event(t)
    w.note(
        "t=100: a has 4 waiting on each replica: spare queue 1 1 5 5, average 3 (not below 3: no scale-up), "
        "load 2 -> 2.67 with one fewer, spare 2.33 < 3: not safe; the window restarts."
    )
    w.event(100, snap("a", 100, [0.20, 0.25], [4, 4]))
    w.expect(100, ("a", 2, "hold_no_trigger"), ("b", 2, "hold_no_trigger"))
    w.event(110, snap("a", 110, [0.20, 0.25]))
    w.expect(110, ("a", 2, "hold_stabilizing"), ("b", 2, "hold_stabilizing"))
    for t in (120, 150, 180, 210, 229):
        w.event(t, snap("a", t, [0.20, 0.25]))
        w.event(t, snap("b", t, [0.15, 0.10]))
    w.note(
        "t=229: -1 on b recommended since 110, for 119 s: still stabilizing. t=230: recommended for the whole "
        "120 s window: -1 on b, the most expensive above 1. a's decision is published at once, b's once its "
        "step has landed; then the group waits for b to reach 1."
    )
    w.event(230, snap("a", 230, [0.20, 0.25]))
    w.expect(230, ("a", 2, "scale_down_spare_capacity"), ("b", 1, "scale_down_spare_capacity"))
    w.expect(230, ("a", 2, "hold_transition"), ("b", 1, "hold_transition"))
    w.event(230, snap("b", 230, [0.15, 0.10]))
    w.event(240, target("b", 240, cost=80, replicas=1, gen=2))
    w.expect(240, ("a", 2, "hold_invalidated"), ("b", 1, "hold_invalidated"))
    w.note(
        "t=245: b's fresh snapshot: spare KV 0.60 0.55 0.65, average 0.60; load 0.20 -> 0.30, spare 0.50: "
        "safe again: -1 on a is recommended, and waits a full window from now (each scale-down does)."
    )
    w.event(245, snap("b", 245, [0.15], gen=2))
    w.expect(245, ("a", 2, "hold_stabilizing"), ("b", 1, "hold_stabilizing"))
    return w


def invalidation_then_fresh_snapshot() -> Writer:
    w = Writer()
    w.note(
        "Invalidation: decisions hold until a snapshot of the Deployment's new generation arrives; clocks "
        "of other processes order nothing."
    )
    w.event(0, target("a", 0, cost=40, replicas=2))
    w.expect(0, ("a", 2, "hold_metrics_unavailable"))
    w.event(0, snap("a", 0, [0.65, 0.72]))
    w.expect(0, ("a", 2, "hold_no_trigger"))
    w.note("t=10: the Deployment's pod template changed: generation 2.")
    w.event(10, Invalidation(namespace=NS, name="a", at=dt(10), reason="template_changed", deployment_generation=2))
    w.expect(10, ("a", 2, "hold_invalidated"))
    w.note("t=12: a snapshot collected at t=12 but of generation 1 (the fetcher still had the old target): not acted on.")
    w.event(12, snap("a", 12, [0.85, 0.90]))
    w.event(13, target("a", 13, cost=40, replicas=2, gen=2))
    w.note(
        "t=14: a snapshot of generation 2: all saturated, needed ceil(1.75 / 0.70) = 3, step 1. Its decision "
        "follows the step; then the group waits for it."
    )
    w.event(14, snap("a", 14, [0.85, 0.90], gen=2))
    w.expect(14, ("a", 3, "scale_up_saturated"))
    w.expect(14, ("a", 3, "hold_transition"))
    w.event(20)
    w.note("t=60: the last snapshot (t=14) is 46 s old, older than 45 s: stale.")
    w.event(60)
    w.expect(60, ("a", 3, "hold_stale_metrics"))
    return w


def failed_step_then_retry() -> Writer:
    w = Writer()
    w.note(
        "A failed PATCH is an event: the decision says it was not applied, the next attempt waits a 5 s "
        "backoff, and a replay reproduces all of it."
    )
    w.event(0, target("a", 0, cost=40, replicas=1, max_r=5))
    w.expect(0, ("a", 1, "hold_metrics_unavailable"))
    w.note("t=1: one replica at KV 0.90: saturated; needed ceil(0.90 / 0.70) = 2, step 1 -> 2.")
    w.event(1, snap("a", 1, [0.90]))
    w.outcome(1.2, "scale_failed", "a", 2, outcome="failed", detail="HTTP 503 Service Unavailable")
    w.expect(1.2, ("a", 2, "scale_up_saturated"), applied=False, outcome="failed")
    w.note("t=3: still saturated, but within the backoff (until 6.2): no second attempt, nothing new to say.")
    w.event(3, snap("a", 3, [0.90]))
    w.note("t=7: the backoff is over: the step is tried again and lands.")
    w.event(7, snap("a", 7, [0.90]))
    w.outcome(7.1, "scale_applied", "a", 2)
    w.expect(7.1, ("a", 2, "scale_up_saturated"), applied=True, outcome="applied")
    w.expect(7.1, ("a", 2, "hold_transition"))
    return w


SCENARIOS = {
    "burst_two_variants.jsonl": burst_two_variants,
    "scale_down_after_stabilization.jsonl": scale_down_after_stabilization,
    "invalidation_then_fresh_snapshot.jsonl": invalidation_then_fresh_snapshot,
    "failed_step_then_retry.jsonl": failed_step_then_retry,
}


def main() -> None:
    for filename, build in SCENARIOS.items():
        build().save(filename)


if __name__ == "__main__":
    main()
