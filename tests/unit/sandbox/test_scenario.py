"""Scenario files load into typed values, and bad ones fail with a message that says where and why."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import pytest

from services.sandbox import load, queueing, scenario

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
