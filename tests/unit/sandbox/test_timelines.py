"""Each shipped story's comment, recomputed from its file: the arithmetic that makes a scenario's
expectations hold by construction (docs/sandbox.md). Change the intervals, the variants, the load or
the analyzer, and these say whether the story still fits. The same stories are also simulated with
the production scaler core (test_stories.py) and run live (tests/e2e).

Capacities are the SLO analyzer's model of a replica (docs/algorithms.md, "SLO analyzer") and V2's
token capacity (a share of the KV cache); `NOISE` is how far an estimate may be from that model (the
decision lab's fits stay within it once fitted). `MEASURED` is how far above the offered rate the
measured one may be: the fetcher's arrival rate is the rate of finished requests, so a backlog that
drains adds to it, and Prometheus extrapolates the series of a pod that just appeared (live runs of
the default scenario measured up to 31 % above the offered 32 req/s while the cheap variant grew).
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.sandbox import arrivals, load, pipeline, queueing, router, scenario
from services.scaler.scaling_config import ScalingConfig

SCENARIOS = Path(scenario.__file__).parent / "scenarios"
CONFIG = ScalingConfig()
UP, DOWN = CONFIG.scale_up_threshold, CONFIG.scale_down_boundary
NOISE = 0.3
MEASURED = 1.35


@dataclass(frozen=True)
class Timing:
    one_stage: float  # a scale-down stage: the window, the next snapshot, the next evaluation, latency
    lag: float  # usable metrics of a new load level: rate window, scrape, fetch, evaluation


def _timing(spec: scenario.Scenario) -> Timing:
    assert spec.timing.given().keys() == {"fetch", "scrape", "reconcile", "stabilization"}
    i = pipeline.Intervals(**spec.timing.given())
    return Timing(
        one_stage=i.stabilization + i.fetch + i.reconcile + 1.0,
        lag=i.rate_window + i.scrape + i.fetch + i.reconcile,
    )


def _request_shape(model: scenario.Model) -> tuple[float, float]:
    """Mean prompt and output tokens of the model's requests (their distributions, sampled)."""
    rng = random.Random(0)
    n = 50_000
    mean_in = sum(model.requests.input_tokens.sample(rng) for _ in range(n)) / n
    mean_out = sum(model.requests.output_tokens.sample(rng) for _ in range(n)) / n
    return mean_in, mean_out


def _slo_capacity(server: queueing.ServerParams, *, mean_in: float, mean_out: float) -> float:
    """Requests/s one replica serves on the SLO analyzer's model of it: the line 1/ITL = alpha - beta x
    with alpha = 1/base, beta = s/base, at the ITL target or where its KV cache is full (n = x * ITL
    running), whichever comes first."""
    alpha = 1.0 / server.decode_base_seconds
    beta = server.decode_seconds_per_seq / server.decode_base_seconds
    at_target = (alpha - 1000.0 / CONFIG.target_itl_ms) / beta
    running = server.kv_cache_tokens * CONFIG.kv_cache_threshold / (mean_in + mean_out)
    return min(at_target, alpha * running / (1 + beta * running)) / mean_out


def _capacities(model: scenario.Model, shape: tuple[float, float]) -> dict[str, float]:
    mean_in, mean_out = shape
    return {v.name: _slo_capacity(v.server, mean_in=mean_in, mean_out=mean_out) for v in model.variants}


def _assert_the_cheap_variant_is_the_cheaper_per_unit(model: scenario.Model, c: dict[str, float]) -> None:
    """Per req/s (SLO) and per token of cache (V2, which decides until the SLO fit exists), by more
    than the estimates' noise: it is the one that grows, and the expensive one goes first."""
    cheap, expensive = model.variants
    k1 = {v.name: v.server.kv_cache_tokens * CONFIG.kv_cache_threshold for v in model.variants}
    for capacity in (c, k1):
        ratio = (float(expensive.cost) / capacity[expensive.name]) / (float(cheap.cost) / capacity[cheap.name])
        assert ratio >= 1.0 + NOISE, ratio


def _settled(profile: load.Trace | load.Step, final_rate: float) -> float:
    """When the load reaches its final level for good."""
    points = profile.points if isinstance(profile, load.Trace) else [(0.0, profile.initial_rps), *profile.steps]
    last_other = max(t for t, rate in points if rate != final_rate)
    return min(t for t, rate in points if t > last_other)


def _scale_down_needs(timing: Timing) -> float:
    """Seconds after the load settles until the last scale-down stage: the recommendation is final
    once the metrics show the new level (lag); each stage waits a window after the previous one (the
    hold right after a step restarts it), so a stage started just before may leave one more."""
    return timing.lag + 2 * timing.one_stage


def test_default_scenario_tells_its_story_by_construction() -> None:
    """default.yaml: `make demo` must pass by construction, with margin, not by luck (it once ended
    `final 3` for the cheap variant, and once kept both expensive replicas when the default analyzer
    became `slo`)."""
    assert CONFIG.analyzer == "slo"  # the story is the SLO analyzer's (V2 while unfitted)
    spec = scenario.load_scenario(SCENARIOS / "default.yaml")
    timing = _timing(spec)
    (model,) = spec.models
    assert isinstance(model.load, load.Trace)
    cheap, expensive = model.variants
    assert (cheap.name, expensive.name) == ("llama-8b-cheap", "llama-8b-expensive")
    expect = {e.variant: e for e in spec.expectations}
    c = _capacities(model, _request_shape(model))
    assert (c[cheap.name], c[expensive.name]) == (pytest.approx(6.3, abs=0.1), pytest.approx(15.2, abs=0.1))
    _assert_the_cheap_variant_is_the_cheaper_per_unit(model, c)

    # The opening: the expensive variant's spare replica goes in one stage, done by lag + one stage,
    # while the (ramping) load still leaves it spare (1 cheap + all the expensive replicas).
    assert expensive.replicas - expect[expensive.name].final_replicas_at_most == 1
    supply = cheap.replicas * c[cheap.name] + expensive.replicas * c[expensive.name]
    spare = supply - model.load.rate(timing.lag + timing.one_stage) / DOWN
    assert spare >= (1.0 + NOISE) * c[expensive.name], spare

    # The peak: the cheap variant must reach its expected count even with estimates 30 % high, and its
    # maxReplicas covers the peak even with estimates 30 % low and a measured rate 35 % high, so the
    # expensive one is never grown.
    peak = model.load.peak()
    reached = expect[cheap.name].min_replicas_reached
    assert reached is not None
    assert peak / UP > (1.0 + NOISE) * ((reached - 1) * c[cheap.name] + c[expensive.name])
    assert (1.0 - NOISE) * (cheap.max_replicas * c[cheap.name] + c[expensive.name]) >= MEASURED * peak / UP
    assert expect[expensive.name].scale_ups_at_most == 0

    # The end: at the final load both floors carry it with far more than one replica's spare, so the
    # recommendation is both floors from any state, with no "spare, but less than a replica's" hold.
    final_rate = model.load.points[-1][1]
    assert c[cheap.name] + c[expensive.name] >= 3 * final_rate / DOWN
    settled = _settled(model.load, final_rate)
    assert settled == 120
    needed = _scale_down_needs(timing)
    assert (timing.one_stage, timing.lag, needed) == (25, 20, 70)
    assert spec.duration - settled >= 1.25 * needed


def test_trace_scenario_replays_its_slice_with_its_attribution_and_story_by_construction() -> None:
    """trace.yaml's comment, recomputed from the Azure trace it replays."""
    spec = scenario.load_scenario(SCENARIOS / "trace.yaml")
    (model,) = spec.models
    replay = model.load
    assert isinstance(replay, load.Requests)
    attribution = "Azure LLM inference trace 2023, conversation (Microsoft, AzurePublicDataset, CC-BY 4.0)"
    assert attribution in replay.attribution and "Splitwise" in replay.attribution
    assert attribution in " ".join((SCENARIOS / "trace.yaml").read_text().replace("# ", "").split())
    sent = list(load.requests(replay, input_tokens=model.requests.input_tokens,
                              output_tokens=model.requests.output_tokens, seed=0, end=spec.duration))  # fmt: skip
    recorded = arrivals.read(arrivals.resolve("azure-conv"))
    first = next(i for i, a in enumerate(recorded) if a.t >= replay.start)
    # Every request of the slice, in order, at (recorded time - start) / rate scale, with its lengths.
    assert sent == [
        ((a.t - replay.start) / replay.rate_scale, a.input_tokens, a.output_tokens)
        for a in recorded[first : first + len(sent)]
    ]
    assert len(sent) == 2303 and recorded[first + len(sent)].t >= replay.start + spec.duration * replay.rate_scale

    times = [t for t, _, _ in sent]

    def rate(t: float, window: float) -> float:
        return (bisect.bisect_right(times, t) - bisect.bisect_right(times, t - window)) / window

    busiest_minute = max(rate(t, 60) for t in range(60, int(spec.duration) + 1))
    busiest_15s = max(rate(t / 10, 15) for t in range(150, int(spec.duration) * 10 + 1))
    assert (busiest_minute, round(busiest_15s, 1)) == (12.35, 13.7)
    assert rate(60, 60) > 0.9 * busiest_minute  # the first minute already needs the growth
    shape = (sum(i for _, i, _ in sent) / len(sent), sum(o for _, _, o in sent) / len(sent))
    cheap, expensive = model.variants
    c = _capacities(model, shape)
    _assert_the_cheap_variant_is_the_cheaper_per_unit(model, c)
    expect = {e.variant: e for e in spec.expectations}
    reached = expect[cheap.name].min_replicas_reached
    assert reached is not None and cheap.replicas < reached
    assert busiest_minute / UP > (1.0 + NOISE) * ((reached - 1) * c[cheap.name] + expensive.replicas * c[expensive.name])
    assert expect[expensive.name].scale_ups_at_most == 0
    carried = (1.0 - NOISE) * (cheap.max_replicas * c[cheap.name] + expensive.replicas * c[expensive.name])
    assert carried >= MEASURED * busiest_15s / UP
    # The cache holds the longest request the replay can send (the scenario loader checks it too).
    assert max(i + o for _, i, o in replay.requests) <= cheap.server.kv_cache_tokens


def _queue_at_floors(spec: scenario.Scenario, rate: float, seconds: float) -> int:
    """The most requests waiting in the replicas a scenario begins with, at `rate` for `seconds`
    (the replica model and the sandbox's router, on the scenario's own requests)."""
    (model,) = spec.models
    replicas = {
        f"{v.name}-{k}": queueing.Replica(v.server) for v in model.variants for k in range(v.replicas)
    }
    most = 0
    stream = load.requests(
        load.Constant(rps=rate), input_tokens=model.requests.input_tokens,
        output_tokens=model.requests.output_tokens, seed=load.model_seed(spec.seed, 0), end=seconds,
    )  # fmt: skip
    for t, prompt, output in stream:
        for replica in replicas.values():
            replica.advance(t)
        loads = [
            router.ReplicaLoad(key=k, waiting=r.num_waiting, running=r.num_running,
                               kv_cache_usage=r.kv_cache_usage, max_num_seqs=r.params.max_num_seqs)
            for k, r in replicas.items()
        ]  # fmt: skip
        key = router.pick(loads, flow_control=False)
        assert key is not None
        replicas[key].submit(queueing.Request(arrival=t, input_tokens=prompt, output_tokens=output))
        most = max(most, sum(r.num_waiting for r in replicas.values()))
    return most


def test_cold_start_scenario_waits_for_its_pods_by_construction() -> None:
    """cold-start.yaml's comment, recomputed from the file."""
    spec = scenario.load_scenario(SCENARIOS / "cold-start.yaml")
    timing = _timing(spec)
    (model,) = spec.models
    assert isinstance(model.load, load.Step)
    cheap, expensive = model.variants
    assert {v.startup_seconds for v in model.variants} == {60}
    assert all(v.replicas == max(v.min_replicas, 1) for v in model.variants)  # it begins at the floors
    c = _capacities(model, _request_shape(model))
    _assert_the_cheap_variant_is_the_cheaper_per_unit(model, c)
    expect = {e.variant: e for e in spec.expectations}
    (step_at, step), (drop_at, final_rate) = model.load.steps
    floors = cheap.replicas * c[cheap.name] + expensive.replicas * c[expensive.name]

    # The step needs more than the running replicas carry at their thresholds, so the cheap variant grows.
    assert step / UP > 1.05 * floors
    assert expect[cheap.name].min_replicas_reached == cheap.replicas + 1
    # They cannot carry much more at all (10 % more and their queues grow four times as long: they
    # are at their limit); at the step the queues stay short over the whole start-up, so queued
    # requests add little to the demand.
    boot = step_at + timing.lag + cheap.startup_seconds + 1.0  # the new pods Ready (controller: 1 s)
    queued = _queue_at_floors(spec, step, boot - step_at)
    assert queued <= 30
    assert _queue_at_floors(spec, 1.1 * step, boot - step_at) > 4 * queued
    # The bound while the pods boot: estimates 30 % low, a measured rate 35 % high, the queue drained.
    demand = (MEASURED * step + queued / 30.0) / UP
    more = math.ceil((demand - (1.0 - NOISE) * c[expensive.name] * expensive.replicas) / ((1.0 - NOISE) * c[cheap.name]))
    at_most = expect[cheap.name].max_replicas_reached_at_most
    assert at_most is not None and cheap.replicas + more <= at_most <= cheap.max_replicas / 2
    assert expect[expensive.name].scale_ups_at_most == 0
    assert (1.0 - NOISE) * (cheap.max_replicas * c[cheap.name] + c[expensive.name]) >= demand

    # The new pods serve the step before it ends; the scale-down after the drop fits with margin.
    assert boot < drop_at - timing.lag
    assert c[cheap.name] + c[expensive.name] >= 3 * final_rate / DOWN
    assert expect[cheap.name].final_replicas_at_most == max(cheap.min_replicas, 1)
    needed = _scale_down_needs(timing)
    assert (boot, needed) == (101, 70)
    assert spec.duration - drop_at >= 1.25 * needed
