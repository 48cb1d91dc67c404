"""Scenario files load into typed values, and bad ones fail with a message that says where and why."""

from __future__ import annotations

import argparse
import bisect
import random
import textwrap
from pathlib import Path

import pytest

from services.sandbox import arrivals, load, pipeline, queueing, scenario
from services.scaler.scaling_config import ScalingConfig

SCENARIOS = Path(scenario.__file__).parent / "scenarios"

GOOD = """
name: t
duration: 30
namespaces: [llm]
models:
  - id: org/model
    namespace: llm
    load: {kind: ramp, start_rps: 1, end_rps: 5, duration: 10}
    variants:
      - {name: a, cost: "40", accelerator: L40S, max_replicas: 3, initial_replicas: 2, server: {max_num_seqs: 8}}
      - {name: b, va: b-va, cost: "80.5", accelerator: H100, min_replicas: 0, max_replicas: 1}
expectations:
  - {variant: a, min_replicas_reached: 3}
"""


def test_good_scenario_is_typed_with_defaults() -> None:
    s = scenario.parse_scenario(GOOD)
    model = s.models[0]
    assert model.load == load.Ramp(start_rps=1, end_rps=5, duration=10)
    a, b = model.variants
    assert (a.va_name, a.cost, a.replicas, a.server.max_num_seqs) == ("a", "40", 2, 8)
    assert a.server.kv_cache_tokens == queueing.ServerParams().kv_cache_tokens
    assert (b.va_name, b.replicas) == ("b-va", 0)
    assert isinstance(model.requests.input_tokens, queueing.LogNormal)
    assert s.expectations[0].min_replicas_reached == 3
    assert s.variant("b")[1] is b


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_load(path: Path) -> None:
    s = scenario.load_scenario(path)
    assert s.duration > 0
    assert all(m.load is not None and m.load.peak() > 0 for m in s.models)
    costs = sorted(float(v.cost) for _, v in s.variants())
    assert costs[0] < costs[-1]  # every shipped scenario has a cheaper and a dearer variant


def test_default_scenario_ramps_past_the_starting_capacity_then_drops() -> None:
    s = scenario.load_scenario(SCENARIOS / "default.yaml")
    profile = s.models[0].load
    assert profile is not None
    rates = [profile.rate(t) for t in range(0, int(s.duration) + 1)]
    assert rates[0] < 10 and max(rates) >= 25 and rates[-1] < 10
    assert 150 <= s.duration <= 270  # a few minutes: the first thing a newcomer runs


def test_csv_trace_is_read_relative_to_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("time,rps\n0,1\n10,3\n")
    (tmp_path / "s.yaml").write_text(
        GOOD.replace("{kind: ramp, start_rps: 1, end_rps: 5, duration: 10}", "{kind: trace, file: t.csv}")
    )
    s = scenario.load_scenario(tmp_path / "s.yaml")
    trace = s.models[0].load
    assert isinstance(trace, load.Trace)
    assert trace.points == [(0, 1), (10, 3)]
    assert trace.rate(5) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('cost: "40"', "cost: 40"), r"models\[0\]\.variants\[0\]\.cost` \(quote it"),
        (("kind: ramp", "kind: wave"), r"Invalid value 'wave' - at `\$\.models\[0\]\.load\.kind`"),
        (("max_replicas: 3,", "max_replicas: 3, colour: red,"), r"unknown field `colour`"),
        (("namespace: llm", "namespace: other"), r"models\[0\]\.namespace: 'other' is not in namespaces"),
        (("name: b,", "name: a,"), r"variants\[1\]\.name: 'a' is already used by models\[0\]\.variants\[0\]"),
        (("initial_replicas: 2", "initial_replicas: 5"), r"initial_replicas: 5 is outside 1\.\.3"),
        (('"80.5"', '"cheap"'), r"variants\[1\]\.cost: 'cheap' is not a non-negative number"),
        (("name: a,", "name: A_1,"), r"variants\[0\]\.name: invalid object name 'A_1'"),
        (("variant: a,", "variant: zz,"), r"expectations\[0\]\.variant: no variant named 'zz'"),
        (
            ("max_num_seqs: 8", "max_num_seqs: 0"),
            r"max_num_seqs must be >= 1, got 0 - at `\$\.models\[0\]\.variants\[0\]\.server`",
        ),
        (
            ("max_num_seqs: 8", "kv_cache_tokens: 1024"),
            r"cannot hold the largest request \(4096 \+ 192 tokens\)",
        ),
        (("duration: 30", "duration: -1"), r"duration must be a positive number"),
        (("end_rps: 5", "end_rps: -5"), r"load\.end_rps: must be >= 0"),
    ],
)
def test_bad_scenarios_say_where_and_why(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(scenario.ScenarioError, match=message):
        scenario.parse_scenario(GOOD.replace(old, new, 1), source="bad.yaml")


def test_several_problems_are_reported_together() -> None:
    text = GOOD.replace("namespace: llm", "namespace: other").replace('"80.5"', '"x"')
    with pytest.raises(scenario.ScenarioError) as info:
        scenario.parse_scenario(text, source="bad.yaml")
    assert str(info.value).startswith("bad.yaml: ")
    assert "namespace" in str(info.value) and "cost" in str(info.value)


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(scenario.ScenarioError, match="cannot read"):
        scenario.load_scenario(tmp_path / "missing.yaml")
    with pytest.raises(scenario.ScenarioError, match="not valid YAML"):
        scenario.parse_scenario("a: [", source="x")
    with pytest.raises(scenario.ScenarioError, match="expected a mapping"):
        scenario.parse_scenario("- 1\n- 2\n", source="x")
    (tmp_path / "s.yaml").write_text(
        textwrap.dedent(GOOD).replace(
            "{kind: ramp, start_rps: 1, end_rps: 5, duration: 10}", "{kind: trace, file: nope.csv}"
        )
    )
    with pytest.raises(scenario.ScenarioError, match=r"models\[0\]\.load: .*nope\.csv"):
        scenario.load_scenario(tmp_path / "s.yaml")


def test_a_scenario_carries_the_timing_its_story_needs_and_flags_override_it() -> None:
    from services.sandbox import command
    from services.sandbox.scenario import load_scenario

    ci = load_scenario(command.resolve_scenario(Path("ci")))
    assert ci.timing.given() == {"fetch": 1.0, "scrape": 1.0, "reconcile": 1.0, "stabilization": 6.0}
    default = load_scenario(command.resolve_scenario(Path("default"))).timing.given()
    assert default == {"fetch": 2.0, "scrape": 1.0, "reconcile": 2.0, "stabilization": 20.0}
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    opts = command.options(parser.parse_args(["--scenario", "ci", "--stabilization", "9s"]))
    assert opts.intervals == {"stabilization": 9.0}  # the rest comes from the scenario at run time


def _request_shape(model: scenario.Model) -> tuple[float, float]:
    """Mean prompt and output tokens of the model's requests (their distributions, sampled)."""
    rng = random.Random(0)
    n = 50_000
    mean_in = sum(model.requests.input_tokens.sample(rng) for _ in range(n)) / n
    mean_out = sum(model.requests.output_tokens.sample(rng) for _ in range(n)) / n
    return mean_in, mean_out


def _slo_capacity(server: queueing.ServerParams, *, mean_in: float, mean_out: float, config: ScalingConfig) -> float:
    """Requests/s one replica serves on the SLO analyzer's model of it (docs/algorithms.md): the line
    1/ITL = alpha - beta x with alpha = 1/base, beta = s/base, at the ITL target or where its KV cache
    is full (n = x * ITL running), whichever comes first."""
    alpha = 1.0 / server.decode_base_seconds
    beta = server.decode_seconds_per_seq / server.decode_base_seconds
    at_target = (alpha - 1000.0 / config.target_itl_ms) / beta
    running = server.kv_cache_tokens * config.kv_cache_threshold / (mean_in + mean_out)
    return min(at_target, alpha * running / (1 + beta * running)) / mean_out


def test_default_scenario_tells_its_story_by_construction() -> None:
    """The timeline written in default.yaml's comment, recomputed from the file: `make demo` must
    pass by construction, with margin, not by luck (it once ended `final 3` for the cheap variant, and
    once kept both expensive replicas when the default analyzer became `slo`)."""
    spec = scenario.load_scenario(SCENARIOS / "default.yaml")
    config = ScalingConfig()
    assert config.analyzer == "slo"  # the story below is the SLO analyzer's (V2 while unfitted)
    intervals = pipeline.Intervals(**spec.timing.given())
    assert spec.timing.given().keys() == {"fetch", "scrape", "reconcile", "stabilization"}
    one_stage = intervals.stabilization + intervals.fetch + intervals.reconcile + 1.0
    lag = intervals.rate_window + intervals.scrape + intervals.fetch + intervals.reconcile
    (model,) = spec.models
    assert isinstance(model.load, load.Trace)
    cheap, expensive = model.variants
    assert (cheap.name, expensive.name) == ("llama-8b-cheap", "llama-8b-expensive")
    expect = {e.variant: e for e in spec.expectations}
    mean_in, mean_out = _request_shape(model)
    c = {v.name: _slo_capacity(v.server, mean_in=mean_in, mean_out=mean_out, config=config) for v in model.variants}
    k1 = {v.name: v.server.kv_cache_tokens * config.kv_cache_threshold for v in model.variants}
    assert (c[cheap.name], c[expensive.name]) == (pytest.approx(6.3, abs=0.1), pytest.approx(15.2, abs=0.1))
    up, down = config.scale_up_threshold, config.scale_down_boundary
    noise = 0.3  # how far a fitted estimate may be from the model (the lab's fits stay within it)

    # Cost per unit of capacity: the cheap variant is cheaper per req/s (SLO) and per token (V2),
    # by more than the estimates' noise, so it is the one that grows and the expensive one goes first.
    for capacity in (c, k1):
        ratio = (float(expensive.cost) / capacity[expensive.name]) / (float(cheap.cost) / capacity[cheap.name])
        assert ratio >= 1.0 + noise, ratio

    # The opening: the expensive variant's spare replica goes in one stage, done by lag + one stage,
    # while the (ramping) load still leaves it spare (1 cheap + all the expensive replicas).
    assert expensive.replicas - expect[expensive.name].final_replicas_at_most == 1
    opening_done = lag + one_stage
    supply = cheap.replicas * c[cheap.name] + expensive.replicas * c[expensive.name]
    spare = supply - model.load.rate(opening_done) / down
    assert spare >= (1.0 + noise) * c[expensive.name], spare

    # The peak: the cheap variant must reach its expected count even with estimates 30 % high, and its
    # maxReplicas covers the peak even with estimates 30 % low, so the expensive one is never grown.
    peak = model.load.peak()
    reached = expect[cheap.name].min_replicas_reached
    assert reached is not None
    assert peak / up > (1.0 + noise) * ((reached - 1) * c[cheap.name] + c[expensive.name])
    assert (1.0 - noise) * (cheap.max_replicas * c[cheap.name] + c[expensive.name]) >= peak / up
    assert expect[expensive.name].scale_ups_at_most == 0

    # The end: at the final load both floors carry it with far more than one replica's spare, so the
    # recommendation is both floors from any state, with no "spare, but less than a replica's" hold.
    points = model.load.points
    final_rate = points[-1][1]
    floors = c[cheap.name] + c[expensive.name]
    assert floors >= 3 * final_rate / down
    # The load is at its final level from `settled` on: the first point after the last other level.
    last_other = max(t for t, rate in points if rate != final_rate)
    settled = min(t for t, rate in points if t > last_other)
    assert settled == 120
    # Final once the metrics show it (lag); each stage waits a window after the previous one, so a
    # stage started just before may leave one more: lag + 2 stages.
    needed = lag + 2 * one_stage
    assert (one_stage, lag, needed) == (25, 20, 70)
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

    config = ScalingConfig()
    times = [t for t, _, _ in sent]

    def rate(t: float, window: float) -> float:
        return (bisect.bisect_right(times, t) - bisect.bisect_right(times, t - window)) / window

    busiest_minute = max(rate(t, 60) for t in range(60, int(spec.duration) + 1))
    busiest_15s = max(rate(t / 10, 15) for t in range(150, int(spec.duration) * 10 + 1))
    assert (busiest_minute, round(busiest_15s, 1)) == (12.35, 13.7)
    assert rate(60, 60) > 0.9 * busiest_minute  # the first minute already needs the growth
    mean_in = sum(i for _, i, _ in sent) / len(sent)
    mean_out = sum(o for _, _, o in sent) / len(sent)
    cheap, expensive = model.variants
    c = {v.name: _slo_capacity(v.server, mean_in=mean_in, mean_out=mean_out, config=config) for v in model.variants}
    k1 = {v.name: v.server.kv_cache_tokens * config.kv_cache_threshold for v in model.variants}
    noise = 0.3
    for capacity in (c, k1):
        ratio = (float(expensive.cost) / capacity[expensive.name]) / (float(cheap.cost) / capacity[cheap.name])
        assert ratio >= 1.0 + noise, ratio
    expect = {e.variant: e for e in spec.expectations}
    reached = expect[cheap.name].min_replicas_reached
    assert reached is not None and cheap.replicas < reached
    up = config.scale_up_threshold
    assert busiest_minute / up > (1.0 + noise) * ((reached - 1) * c[cheap.name] + expensive.replicas * c[expensive.name])
    assert expect[expensive.name].scale_ups_at_most == 0
    carried = (1.0 - noise) * (cheap.max_replicas * c[cheap.name] + expensive.replicas * c[expensive.name])
    assert carried >= 1.1 * busiest_15s / up
    # The cache holds the longest request the replay can send (the scenario loader checks it too).
    assert max(i + o for _, i, o in replay.requests) <= cheap.server.kv_cache_tokens


def test_a_request_trace_is_read_relative_to_the_scenario_and_checked(tmp_path: Path) -> None:
    ramp = "{kind: ramp, start_rps: 1, end_rps: 5, duration: 10}"
    (tmp_path / "t.csv").write_text("time,prompt,output\n0,100,20\n5,4000,500\n")
    (tmp_path / "far.csv").write_text("0,10,5\n100,10,5\n")

    def load_with(replay: str, *, change: tuple[str, str] = ("", "")) -> scenario.Scenario:
        (tmp_path / "s.yaml").write_text(GOOD.replace(ramp, replay).replace(*change))
        return scenario.load_scenario(tmp_path / "s.yaml")

    replay = load_with("{kind: requests, file: t.csv}").models[0].load
    assert isinstance(replay, load.Requests) and replay.requests == [(0.0, 100, 20), (5.0, 4000, 500)]
    # The trace's own lengths are checked against every variant's cache, not the model's `requests:`.
    small_cache = ("server: {max_num_seqs: 8}", "server: {max_num_seqs: 8, kv_cache_tokens: 4096}")
    with pytest.raises(scenario.ScenarioError, match=r"cannot hold the largest request \(4000 \+ 500 tokens\)"):
        load_with("{kind: requests, file: t.csv}", change=small_cache)
    with pytest.raises(scenario.ScenarioError, match=r"models\[0\]\.load: window starts at 50s, after the traffic ends"):
        load_with("{kind: requests, file: t.csv, start: 50}")
    with pytest.raises(scenario.ScenarioError, match=r"no request of .*far\.csv within the scenario's 30s"):
        load_with("{kind: requests, file: far.csv, start: 40}")  # its next request comes at 60 s
