"""The V2 token-capacity analyzer against every worked example of docs/algorithms.md, and its memory."""

from __future__ import annotations

import pytest

from services.scaler import reasons
from services.scaler.analyzers import GroupView, VariantView
from services.scaler.analyzers.capacity import CapacityAnalyzer, CapacityMemory
from services.scaler.core import Scaler
from services.scaler.digest import Digest, digest
from services.scaler.scaling_config import ConfigSet, ScaleToZeroConfig, ScalingConfig
from shared.messages import AllocationMetrics, MetricsSnapshot, ReplicaMetrics

from .builders import NS, decisions, dt, feed, scales, summary, target

CONFIG = ScalingConfig(analyzer="v2")
T = 16384  # num_gpu_blocks 1024 x block_size 16: k1 = 13,107.2
BIG_T = 40960  # the dearer variant: k1 = 32,768


def wire(
    name: str,
    kv: list[float],
    *,
    queue: list[float] | None = None,
    cache: int = T,
    gateway: float | None = None,
    at: float = 0.0,
    generation: int = 1,
    tokens: tuple[float, float] | None = (512.0, 128.0),
    rate: float | None = 1.0,
) -> MetricsSnapshot:
    q = queue or [0.0] * len(kv)
    return MetricsSnapshot(
        namespace=NS,
        name=name,
        at=dt(at),
        collected_at=dt(at),
        deployment_generation=generation,
        allocation=AllocationMetrics(
            arrival_rate=rate,
            avg_input_tokens=None if tokens is None else tokens[0],
            avg_output_tokens=None if tokens is None else tokens[1],
            gateway_queue=gateway,
        ),
        replicas=tuple(
            ReplicaMetrics(pod=f"{name}-{i}", kv_cache_usage=k, waiting=w, num_gpu_blocks=cache // 16, block_size=16)
            for i, (k, w) in enumerate(zip(kv, q, strict=True))
        ),
    )


def view(name: str, m: Digest, *, cost: float = 40.0, ready: int, spec: int, max_replicas: int | None = None) -> VariantView:
    return VariantView(
        name=name, cost=cost, min_replicas=1, max_replicas=max_replicas, spec=spec, ready=ready, expected=spec,
        frozen=False, metrics=m,
    )


def analyze(*variants: tuple[str, MetricsSnapshot, float, int, int]) -> tuple[CapacityMemory, object]:
    memory = CapacityMemory()
    views = []
    for name, snapshot, cost, ready, spec in variants:
        m = digest(snapshot, received_at=0)
        memory.observe(name, m, CONFIG)
        views.append(view(name, m, cost=cost, ready=ready, spec=spec))
    group = GroupView(namespace=NS, model_id="m", variants=tuple(views), config=CONFIG, now=0)
    return memory, CapacityAnalyzer(memory).recommend(group)


# docs/algorithms.md, "Token-capacity analysis": T = 16,384, avgIn 512, avgOut 128, one variant.
@pytest.mark.parametrize(
    ("kv", "queue", "ready", "spec", "gateway", "d", "s", "a", "rc", "sc", "desired"),
    [
        ([0.70, 0.75], None, 2, 2, None, 23756.8, 26214.4, 26214.4, 1734.8, 0, 3),
        ([0.30, 0.35, 0.25], None, 3, 3, None, 14745.6, 39321.6, 39321.6, 0, 18256.5, 2),
        ([0.10] * 4, None, 4, 4, None, 6553.6, 52428.8, 52428.8, 0, 43066.5, 1),
        ([0.50], [6], 1, 1, None, 12032, 8192, 8192, 5963.3, 0, 2),
        ([0.78, 0.80], None, 2, 3, None, 25886.7, 26214.4, 39321.6, 0, 0, 3),
        ([0.95, 0.95], [8, 8], 2, 3, None, 41369.6, 26214.4, 39321.6, 9348.5, 0, 4),
        ([0.40, 0.40], None, 2, 2, 30, 32307.2, 26214.4, 26214.4, 11794.1, 0, 3),
        ([0.60, 0.62], None, 2, 2, None, 19988.5, 26214.4, 26214.4, 0, 0, 2),
    ],
)
def test_worked_examples_one_variant(
    kv: list[float], queue: list[float] | None, ready: int, spec: int, gateway: float | None,
    d: float, s: float, a: float, rc: float, sc: float, desired: int,
) -> None:  # fmt: skip
    _, rec = analyze(("v", wire("v", kv, queue=queue, gateway=gateway), 40.0, ready, spec))
    n = rec.numbers  # type: ignore[attr-defined]
    assert (n.demand, n.supply, n.anticipated) == pytest.approx((d, s, a), abs=0.1)
    assert (n.required, n.spare) == pytest.approx((rc, sc), abs=0.1)
    assert rec.desired == (desired,)  # type: ignore[attr-defined]
    expected_reason = (
        reasons.SCALE_UP_CAPACITY if desired > spec else reasons.SCALE_DOWN_SPARE_CAPACITY if desired < spec
        else reasons.HOLD_NO_TRIGGER
    )  # fmt: skip
    assert rec.reason == expected_reason  # type: ignore[attr-defined]


def test_the_compute_bound_replica_reports_where_its_capacity_came_from() -> None:
    _, rec = analyze(("v", wire("v", [0.50], queue=[6]), 40.0, 1, 1))
    (figures,) = rec.numbers.capacities  # type: ignore[attr-defined]
    assert (figures.variant, figures.capacity, figures.source) == ("v", pytest.approx(8192), "k2")


def test_two_variants_scale_up_on_the_cheapest_per_unit_capacity() -> None:
    # A (cost 40, c 13,107.2), B (cost 80, c 32,768), one replica each at 0.90 and 0.85: +1 on B,
    # where V1's raw-cost rule would pick A.
    _, rec = analyze(
        ("a", wire("a", [0.90]), 40.0, 1, 1),
        ("b", wire("b", [0.85], cache=BIG_T), 80.0, 1, 1),
    )
    n = rec.numbers  # type: ignore[attr-defined]
    assert (n.demand, n.anticipated, n.required) == pytest.approx((49561.6, 45875.2, 12432.6), abs=0.1)
    assert rec.desired == (1, 2)  # type: ignore[attr-defined]


def test_two_variants_scale_down_several_from_the_dearest_per_unit_capacity_first() -> None:
    _, rec = analyze(
        ("a", wire("a", [0.10, 0.10]), 40.0, 2, 2),
        ("b", wire("b", [0.10, 0.10], cache=BIG_T), 80.0, 2, 2),
    )
    n = rec.numbers  # type: ignore[attr-defined]
    assert (n.demand, n.supply, n.spare) == pytest.approx((11468.8, 91750.4, 75366.4), abs=0.1)
    assert rec.desired == (1, 1)  # type: ignore[attr-defined]


def test_without_cache_size_the_v1_rules_decide_and_say_so() -> None:
    snapshot = wire("v", [0.90, 0.90])
    bare = MetricsSnapshot(
        namespace=NS, name="v", at=dt(0), collected_at=dt(0), allocation=snapshot.allocation,
        replicas=tuple(ReplicaMetrics(pod=r.pod, kv_cache_usage=r.kv_cache_usage, waiting=0) for r in snapshot.replicas),
    )
    _, rec = analyze(("v", bare, 40.0, 2, 2))
    assert rec.reason == reasons.SCALE_UP_SATURATED  # type: ignore[attr-defined]
    assert "no token capacity known" in rec.detail  # type: ignore[attr-defined]


def test_memory_learns_k2_and_keeps_the_last_capacity_and_request_shape() -> None:
    memory = CapacityMemory()
    memory.observe("v", digest(wire("v", [0.50], queue=[6]), received_at=0), CONFIG)
    # Not saturated now, but k2 is remembered: capacity stays compute-bound at the learned 8,192.
    memory.observe("v", digest(wire("v", [0.20], tokens=None), received_at=1), CONFIG)
    assert memory.capacity["v"] == (pytest.approx(8192), "k2")
    assert memory.tokens_per_request == 640
    # No replica reports: the last known capacity, marked as such.
    memory.observe("v", digest(wire("v", []), received_at=2), CONFIG)
    assert memory.capacity["v"] == (pytest.approx(8192), "memory")


# ---------------------------------------------------------------- in the core


V2 = ConfigSet(default=CONFIG)


def test_v2_scales_again_while_its_first_new_pod_is_still_starting() -> None:
    s = Scaler(configs=V2)
    feed(s, [(0, target("a", replicas=2, max_replicas=10))])
    actions = feed(s, [(0, wire("a", [0.95, 0.95], queue=[8, 8]))])
    # D 41,369.6 / 0.85 = 48,670 against A 26,214.4: RC 22,455.7 -> +2 (to 4).
    assert [x.replicas for x in scales(actions)] == [4]
    # The Deployment has 4, 2 ready: the demand grew, and what is coming is not enough: again.
    feed(s, [(5, target("a", replicas=4, ready=2, generation=2, max_replicas=10))])
    actions = feed(s, [(6, wire("a", [0.99, 0.99], queue=[20, 20], generation=2, at=6))])
    assert [x.replicas for x in scales(actions)] == [6]
    assert decisions(actions)[0].reason == reasons.SCALE_UP_CAPACITY


def test_v2_holds_while_what_is_coming_covers_the_demand() -> None:
    s = Scaler(configs=V2)
    feed(s, [(0, target("a", replicas=3, ready=2))])
    actions = feed(s, [(0, wire("a", [0.78, 0.80]))])
    assert scales(actions) == [] and summary(actions)[-1] == ("a", 3, reasons.HOLD_NO_TRIGGER)


def test_v2_paced_scale_down_removes_several_replicas_in_one_step() -> None:
    s = Scaler(configs=V2)
    feed(s, [(0, target("a", replicas=4))])
    for t in (0, 60):
        assert scales(feed(s, [(t, wire("a", [0.10] * 4, at=t))])) == []
    actions = feed(s, [(120, wire("a", [0.10] * 4, at=120))])
    assert [x.replicas for x in scales(actions)] == [1]
    assert decisions(actions)[0].numbers.step == -3


def test_a_stage_of_a_paced_scale_down_says_so() -> None:
    # 6 replicas: 4 recommended at 0 s, 1 from 60 s; at 120 s the window still holds the 4, so the
    # step goes to 4 now (a stage, not a hold) and the rest waits for the window.
    s = Scaler(configs=V2)
    feed(s, [(0, target("a", replicas=6))])
    feed(s, [(0, wire("a", [0.30] * 6, at=0)), (60, wire("a", [0.05] * 6, at=60))])
    actions = feed(s, [(120, wire("a", [0.05] * 6, at=120))])
    assert [x.replicas for x in scales(actions)] == [4]
    step = decisions(actions)[0]
    assert (step.reason, step.current, step.desired, step.numbers.recommended) == (reasons.SCALE_DOWN_PACED, 6, 4, 1)
    assert "scale-down of a to 1 recommended for 60s of 120s" in step.detail


def test_at_zero_the_gateway_queue_brings_the_model_back_sized_for_it() -> None:
    config = ConfigSet(
        default=ScalingConfig(analyzer="v2", scale_to_zero=ScaleToZeroConfig(enabled=True, retention_seconds=600))
    )
    s = Scaler(configs=config)
    feed(s, [(0, target("a", cost=40, min_replicas=0, max_replicas=10)), (0, target("b", cost=80, min_replicas=0))])
    # The model ran before: capacities and request shape are known, then it went to zero.
    feed(s, [(0, wire("a", [0.2])), (0, wire("b", [0.2], cache=BIG_T))])
    zero_a = target("a", cost=40, replicas=0, min_replicas=0, max_replicas=10, generation=2)
    zero_b = target("b", cost=80, replicas=0, min_replicas=0, generation=2)
    feed(s, [(10, zero_a), (10, zero_b)])
    # At zero there are no pods: no arrival rate, only what the gateway reports.
    quiet = [(11, wire(n, [], at=11, generation=2, tokens=None, gateway=0, rate=None)) for n in "ab"]
    assert scales(feed(s, quiet)) == []
    # 12 requests wait in front of it: 12 x 640 / 0.85 = 9,035 tokens: one replica of b (32,768 per
    # replica at cost 80 is cheaper per token than a's 13,107 at 40) would do.
    actions = feed(s, [(12, wire("a", [], at=12, generation=2, tokens=None, gateway=12, rate=None))])
    assert [(x.name, x.replicas) for x in scales(actions)] == [("b", 1)]
    # 60 waiting: 60 x 640 / 0.85 / 32,768 = 1.38 -> 2 replicas.
    s2 = Scaler(configs=config)
    feed(s2, [(0, target("a", cost=40, min_replicas=0, max_replicas=10)), (0, target("b", cost=80, min_replicas=0))])
    feed(s2, [(0, wire("a", [0.2])), (0, wire("b", [0.2], cache=BIG_T)), (10, zero_a), (10, zero_b)])
    arrivals = [(12, wire(n, [], at=12, generation=2, tokens=None, gateway=60, rate=None)) for n in "ba"]
    actions = feed(s2, arrivals)
    assert [(x.name, x.replicas) for x in scales(actions)] == [("b", 2)]


def test_queued_requests_keep_a_model_from_going_to_zero() -> None:
    config = ConfigSet(default=ScalingConfig(scale_to_zero=ScaleToZeroConfig(enabled=True, retention_seconds=60)))
    s = Scaler(configs=config)
    feed(s, [(0, target("a", min_replicas=0))])
    # Nothing completes (rate 0), but three requests wait: not idle, whatever the retention.
    for t in range(0, 200, 15):
        assert scales(feed(s, [(t, wire("a", [0.0], at=t, gateway=3, rate=0.0))])) == []
    assert s.last_decision(NS, "a").reason != reasons.SCALE_TO_ZERO  # type: ignore[union-attr]


def test_a_snapshot_that_came_before_its_target_still_teaches_the_capacity() -> None:
    # The metrics stream can deliver before the targets stream: the core keeps the snapshot and learns
    # from it when the target arrives (it used to fall back to V1 rules: "no token capacity known").
    s = Scaler(configs=V2)
    s.handle(wire("a", [0.70, 0.75]), 0)
    actions = feed(s, [(0, target("a", replicas=2))])
    assert [x.replicas for x in scales(actions)] == [3]
    assert decisions(actions)[0].reason == reasons.SCALE_UP_CAPACITY
