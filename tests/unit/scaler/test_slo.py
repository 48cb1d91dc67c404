"""The SLO analyzer (docs/algorithms.md, "SLO analyzer"): the fit of latency on load, its failure modes,
the fallback to V2 until it is fitted, and sizing for the arrival rate.

The replicas here behave as the analyzer's model says a vLLM replica does: an iteration takes
``base + s * n`` seconds for ``n`` running requests, so a replica generating ``x`` tokens/s has
``ITL = base / (1 - s * x)``. With base 20 ms and s 0.5 ms: 1/ITL = 50 - 0.025 x, and at a 100 ms
target one replica generates (50 - 10) / 0.025 = 1,600 tokens/s: 8 requests/s of 200 output tokens.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from services.scaler import reasons
from services.scaler.analyzers import GroupView, Recommendation, VariantView
from services.scaler.analyzers.capacity import CapacityAnalyzer, CapacityMemory
from services.scaler.analyzers.slo import FIT_LIMIT, MIN_POINTS, SloAnalyzer, SloMemory
from services.scaler.core import Scaler
from services.scaler.digest import Digest, digest
from services.scaler.scaling_config import ConfigSet, ScalingConfig
from shared.messages import AllocationMetrics, MetricsSnapshot, ReplicaMetrics

from .builders import NS, decisions, dt, feed, scales, target

CONFIG = ScalingConfig(analyzer="slo", target_itl_ms=100.0)
BASE, S = 0.020, 0.0005
OUT = 200.0  # output tokens per request
BIG = 1 << 20  # a KV cache that never binds (tokens)


def itl(x: float, *, base: float = BASE, s: float = S) -> float:
    return base / (1.0 - s * x)


def wire(
    name: str,
    loads: list[float],
    *,
    rate: float | None = 10.0,
    at: float = 0.0,
    generation: int = 1,
    cache: int = BIG,
    gateway: float | None = None,
    waiting: list[float] | None = None,
    base: float = BASE,
    s: float = S,
    out: float = OUT,
) -> MetricsSnapshot:
    """A snapshot whose pods generated ``loads`` tokens/s each, at the ITL the model says."""
    queue = waiting or [0.0] * len(loads)
    return MetricsSnapshot(
        namespace=NS,
        name=name,
        at=dt(at),
        collected_at=dt(at),
        deployment_generation=generation,
        allocation=AllocationMetrics(
            arrival_rate=rate, avg_input_tokens=440.0, avg_output_tokens=out, gateway_queue=gateway
        ),
        replicas=tuple(
            ReplicaMetrics(
                pod=f"{name}-{i}",
                kv_cache_usage=0.3,
                waiting=w,
                num_gpu_blocks=cache // 16,
                block_size=16,
                generation_tokens_rate=x,
                itl_seconds=itl(x, base=base, s=s) if x > 0 else None,
            )
            for i, (x, w) in enumerate(zip(loads, queue, strict=True))
        ),
    )


SWEEP = [200.0, 400.0, 600.0, 800.0, 1000.0, 1200.0, 1400.0]


def learned(*variants: tuple[str, list[float]]) -> SloMemory:
    memory = SloMemory()
    for name, loads in variants:
        memory.observe(name, digest(wire(name, loads), received_at=0))
    return memory


def view(name: str, m: Digest, *, cost: float, ready: int, spec: int | None = None, min_replicas: int = 1) -> VariantView:
    spec = ready if spec is None else spec
    return VariantView(
        name=name, cost=cost, min_replicas=min_replicas, max_replicas=None, spec=spec, ready=ready,
        expected=spec, frozen=False, metrics=m,
    )  # fmt: skip


def recommend(memory: SloMemory, *views: VariantView, config: ScalingConfig = CONFIG) -> Recommendation:
    capacity = CapacityMemory()
    for v in views:
        capacity.observe(v.name, v.metrics, config)
    group = GroupView(namespace=NS, model_id="m", variants=views, config=config, now=0)
    return SloAnalyzer(memory, capacity).recommend(group)


# ------------------------------------------------------------------------------------------ the fit


def test_the_fit_recovers_the_replica_from_its_points() -> None:
    fit = learned(("a", SWEEP)).fit("a", 0.100)
    assert fit is not None and fit.fitted
    assert (fit.alpha, fit.beta, fit.r2, fit.points) == (
        pytest.approx(50.0),
        pytest.approx(0.025),
        pytest.approx(1.0),
        len(SWEEP),
    )
    assert fit.tokens_at(0.100) == pytest.approx(1600.0)
    assert fit.tokens_at(0.050) == pytest.approx(1200.0)  # (50 - 20) / 0.025


def points(tokens_itl: list[tuple[float, float]]) -> Digest:
    """A snapshot whose pods reported these (tokens/s, ITL seconds), whatever the model says."""
    snap = wire("a", [x for x, _ in tokens_itl])
    replicas = tuple(
        msgspec.structs.replace(r, itl_seconds=latency) for r, (_, latency) in zip(snap.replicas, tokens_itl, strict=True)
    )
    return digest(msgspec.structs.replace(snap, replicas=replicas), received_at=0)


def test_noise_within_reason_still_fits_close() -> None:
    rng = random.Random(7)
    memory = SloMemory()
    for _ in range(40):
        loads = [rng.uniform(200, 1500) for _ in range(3)]
        memory.observe("a", points([(x, itl(x) * rng.uniform(0.95, 1.05)) for x in loads]))
    fit = memory.fit("a", 0.100)
    assert fit is not None and fit.fitted and fit.r2 > 0.9
    assert fit.tokens_at(0.100) == pytest.approx(1600.0, rel=0.05)


@pytest.mark.parametrize(
    ("loads", "why"),
    [
        (SWEEP[: MIN_POINTS - 1], "too few points"),
        ([800.0] * 10, "one load only"),
    ],
)
def test_not_fitted_without_enough_of_a_line(loads: list[float], why: str) -> None:
    fit = learned(("a", loads)).fit("a", 0.100)
    assert fit is not None and not fit.fitted, why
    # The stand-in never overstates a replica: the most it was seen to serve within the target.
    assert fit.tokens_at(0.100) == max(loads)


def test_the_capacity_is_a_confidence_bound_that_tightens_with_evidence() -> None:
    # Noisy points at loads close together: the line is uncertain, far more so at 1,600 tokens/s
    # (twice the loads seen) than where the points are; the capacity stays well inside the line's
    # value and approaches it as points at varied loads accumulate.
    rng = random.Random(11)
    memory = SloMemory()
    for _ in range(3):
        memory.observe("a", points([(x, itl(x) * rng.uniform(0.9, 1.1)) for x in (700.0, 800.0, 900.0)]))
    few = memory.fit("a", 0.100)
    assert few is not None
    early = few.capacity_at(0.100) if few.fitted else 0.0
    assert early < 0.9 * 1600
    for _ in range(200):
        memory.observe("a", points([(x, itl(x) * rng.uniform(0.9, 1.1)) for x in (300.0, 800.0, 1300.0)]))
    many = memory.fit("a", 0.100)
    assert many is not None and many.fitted
    assert early < many.capacity_at(0.100) <= many.tokens_at(0.100)
    assert many.capacity_at(0.100) == pytest.approx(1600.0, rel=0.1)


def test_a_slope_that_is_not_negative_or_a_poor_line_is_not_fitted() -> None:
    faster = SloMemory()  # latency that falls with load: not a replica's behaviour (a cache warming up…)
    faster.observe("a", digest(wire("a", SWEEP, s=-0.0005), received_at=0))
    assert not faster.fit("a", 0.100).fitted  # type: ignore[union-attr]
    rng = random.Random(3)
    scattered = SloMemory()
    for _ in range(10):
        scattered.observe("a", points([(rng.uniform(200, 1400), rng.uniform(0.03, 0.1)) for _ in range(2)]))
    fit = scattered.fit("a", 0.100)
    assert fit is not None and not fit.fitted  # no slope clearly below zero


def test_points_far_past_the_target_stay_out_of_the_fit() -> None:
    memory = learned(("a", SWEEP))
    # Overloaded replicas (prefills stalling whole batches) at 5x the target: off the line.
    memory.observe("a", points([(500.0, 0.5), (500.0, 0.5)]))
    assert FIT_LIMIT * 0.100 < 0.5
    fit = memory.fit("a", 0.100)
    assert fit is not None and fit.points == len(SWEEP)
    assert fit.tokens_at(0.100) == pytest.approx(1600.0)


def test_idle_pods_teach_nothing() -> None:
    memory = learned(("a", [0.0, 0.0, 0.0]))
    assert memory.fit("a", 0.100) is None


# ------------------------------------------------------------------------------------------ sizing


def test_sizes_the_model_for_its_arrival_rate() -> None:
    memory = learned(("a", SWEEP))
    # 30 requests/s against 3 replicas of 8 requests/s each: 30 / 0.85 = 35.3 > 24: +2 (11.3 / 8).
    m = digest(wire("a", [1000.0] * 3, rate=30.0), received_at=0)
    rec = recommend(memory, view("a", m, cost=10.0, ready=3))
    assert rec.desired == (5,) and rec.reason == reasons.SCALE_UP_CAPACITY
    n = rec.numbers
    assert n is not None
    assert (n.demand, n.supply, n.anticipated, n.required) == (
        pytest.approx(30.0),
        pytest.approx(24.0),
        pytest.approx(24.0),
        pytest.approx(30 / 0.85 - 24),
    )
    [figures] = n.capacities
    assert (figures.variant, figures.capacity, figures.unit) == ("a", pytest.approx(8.0), "requests/s")
    assert figures.fit_r2 == pytest.approx(1.0) and figures.points == len(SWEEP)
    assert figures.source.startswith("fit r2=")


def test_queued_requests_are_demand_to_drain() -> None:
    memory = learned(("a", SWEEP))
    # 18 requests/s alone fit 3 replicas (18 / 0.85 = 21.2 < 24); 60 at the gateway and 30 in the
    # replicas' queues add 90 / 30 s = 3 requests/s: 21 / 0.85 = 24.7 > 24: +1.
    calm = digest(wire("a", [800.0] * 3, rate=18.0), received_at=0)
    assert recommend(memory, view("a", calm, cost=10.0, ready=3)).desired == (3,)
    queued = digest(wire("a", [800.0] * 3, rate=18.0, gateway=60, waiting=[10, 10, 10]), received_at=0)
    rec = recommend(memory, view("a", queued, cost=10.0, ready=3))
    assert rec.desired == (4,) and rec.numbers is not None and rec.numbers.demand == pytest.approx(21.0)


def test_scale_down_removes_only_what_the_spare_covers() -> None:
    memory = learned(("a", SWEEP))
    # 10 requests/s on 5 replicas (40): spare 40 - 10 / 0.70 = 25.7: three replicas of 8 go.
    m = digest(wire("a", [400.0] * 5, rate=10.0), received_at=0)
    rec = recommend(memory, view("a", m, cost=10.0, ready=5))
    assert rec.desired == (2,) and rec.reason == reasons.SCALE_DOWN_SPARE_CAPACITY


def test_the_cheapest_per_request_grows_and_the_dearest_shrinks() -> None:
    # b is twice as fast (base 10 ms, s 0.25 ms: 3,600 tokens/s = 18 requests/s) for 1.5x the cost.
    memory = SloMemory()
    memory.observe("a", digest(wire("a", SWEEP), received_at=0))
    memory.observe("b", digest(wire("b", [x * 2 for x in SWEEP], base=0.010, s=0.00025), received_at=0))
    a = digest(wire("a", [1000.0], rate=20.0), received_at=0)
    b = digest(wire("b", [2000.0], rate=20.0, base=0.010, s=0.00025), received_at=0)
    # 40 / 0.85 = 47.1 against 8 + 18 = 26: 21.1 required, on b (cost 15 / 18 < 10 / 8): +2.
    up = recommend(memory, view("a", a, cost=10.0, ready=1), view("b", b, cost=15.0, ready=1))
    assert up.desired == (1, 3)
    # 5 requests/s on 3 a and 3 b (78): the spare 70.9 takes a's two first (dearer per request), then b's two.
    a3 = digest(wire("a", [300.0] * 3, rate=2.5), received_at=0)
    b3 = digest(wire("b", [300.0] * 3, rate=2.5, base=0.010, s=0.00025), received_at=0)
    down = recommend(memory, view("a", a3, cost=10.0, ready=3), view("b", b3, cost=15.0, ready=3))
    assert down.desired == (1, 1)


def test_output_tokens_per_request_are_the_models_weighted_by_traffic() -> None:
    # a served 30 requests/s of 100 output tokens, b 10 of 500: the model's requests average 200
    # tokens, not the first variant's 100 — so a replica serves 1,600 / 200 = 8 requests/s.
    memory = learned(("a", SWEEP), ("b", SWEEP))
    a = digest(wire("a", [800.0], rate=30.0, out=100.0), received_at=0)
    b = digest(wire("b", [800.0], rate=10.0, out=500.0), received_at=0)
    rec = recommend(memory, view("a", a, cost=10.0, ready=1), view("b", b, cost=10.0, ready=1))
    assert rec.numbers is not None
    assert [c.capacity for c in rec.numbers.capacities] == [pytest.approx(8.0), pytest.approx(8.0)]


def test_a_kv_cache_that_fills_first_caps_the_capacity_at_the_latency_it_fills_at() -> None:
    memory = learned(("a", SWEEP))
    # 16,384 tokens x 0.80 / 640 per request = 20.48 requests running at most. On the line they run at
    # ITL = 20 + 0.5 x 20.48 = 30.24 ms (n = x * ITL gives x = alpha n / (1 + beta n)), so a replica
    # generates 1,024 / 1.512 = 677.2 tokens/s: 3.39 requests/s — not the 8 the latency alone would
    # allow, nor the 1.02 of a full cache at the 100 ms target (a latency a full cache never reaches).
    m = digest(wire("a", [150.0] * 2, rate=8.0, cache=16384), received_at=0)
    rec = recommend(memory, view("a", m, cost=10.0, ready=2))
    assert rec.numbers is not None
    running = 16384 * 0.8 / 640
    assert rec.numbers.capacities[0].capacity == pytest.approx(50.0 * running / (1 + 0.025 * running) / OUT)
    assert rec.numbers.capacities[0].capacity == pytest.approx(3.386, abs=1e-3)
    assert rec.desired == (3,)  # 8 / 0.85 = 9.41 against 2 x 3.39 = 6.77: +1


# ------------------------------------------------------------------------------------------ fallback


def test_until_it_is_fitted_v2_decides_and_the_decision_says_so() -> None:
    memory = learned(("a", [800.0, 800.0]))  # one load: no line yet
    m = digest(wire("a", [800.0, 800.0], rate=2.0), received_at=0)
    v = view("a", m, cost=10.0, ready=2)
    rec = recommend(memory, v)
    capacity = CapacityMemory()
    capacity.observe("a", m, CONFIG)
    v2 = CapacityAnalyzer(capacity).recommend(GroupView(namespace=NS, model_id="m", variants=(v,), config=CONFIG, now=0))
    assert (rec.desired, rec.reason, rec.numbers) == (v2.desired, v2.reason, v2.numbers)
    assert rec.detail.startswith("latency not fitted yet for a: V2 rules;")


def test_one_running_variant_unfitted_is_enough_for_v2_to_decide() -> None:
    # a is fitted and would shrink the group on its estimate; b runs but has no line: V2 decides.
    memory = learned(("a", SWEEP), ("b", [700.0]))
    a = digest(wire("a", [100.0] * 4, rate=1.0), received_at=0)
    b = digest(wire("b", [700.0], rate=1.0), received_at=0)
    rec = recommend(memory, view("a", a, cost=10.0, ready=4), view("b", b, cost=10.0, ready=1))
    assert rec.detail.startswith("latency not fitted yet for b: V2 rules;")
    # Without b, the fitted estimate alone shrinks a to one replica.
    alone = recommend(memory, view("a", a, cost=10.0, ready=4), view("b", b, cost=10.0, ready=0, min_replicas=0))
    assert alone.desired == (1, 0) and "req/s" in alone.detail


# ------------------------------------------------------------------------------------------ the core


def test_the_core_learns_from_snapshots_and_switches_from_v2_to_the_fit() -> None:
    s = Scaler(configs=ConfigSet(default=CONFIG))
    feed(s, [(0, target("a", replicas=2, max_replicas=10))])
    first = decisions(feed(s, [(0, wire("a", [600.0, 620.0], rate=6.0))]))
    assert first[-1].detail.startswith("latency not fitted yet for a")
    # Loads vary as traffic does; once the points span a line, the analyzer sizes on it.
    for t, x in enumerate([300.0, 900.0, 1200.0, 500.0], start=1):
        feed(s, [(t * 15, wire("a", [x, x + 20], rate=6.0, at=t * 15))])
    # 40 requests/s now: 40 / 0.85 = 47.1 against 2 x 8: +4 (the step cap), at once.
    actions = feed(s, [(80, wire("a", [1500.0, 1500.0], rate=40.0, at=80))])
    assert [x.replicas for x in scales(actions)] == [6]
    decision = decisions(actions)[0]  # the step, published with its outcome; a hold follows
    assert decision.reason == reasons.SCALE_UP_CAPACITY and "demand 40.00 req/s" in decision.detail
    assert decision.numbers.capacities[0].capacity == pytest.approx(8.0, rel=1e-3)
