"""Scenario files load into typed values, and bad ones fail with a message that says where and why."""

from __future__ import annotations

import argparse
import random
import textwrap
from pathlib import Path

import pytest

from services.sandbox import load, pipeline, queueing, scenario
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
