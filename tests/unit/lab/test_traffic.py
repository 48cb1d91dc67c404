"""Traffic: a trace's requests (read by the sandbox's reader, tests/unit/sandbox/test_arrivals.py)
scaled in time and sliced, errors as the lab's, and scenario traffic identical to what the live
sandbox's load generator sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.lab import TraceError, traffic
from services.sandbox import arrivals, load, scenario

SCENARIOS = Path(scenario.__file__).parent / "scenarios"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


def test_rate_scale_compresses_time_and_window_slices_simulated_time(tmp_path: Path) -> None:
    path = _write(tmp_path, "".join(f"{t},{10 + t},5\n" for t in range(0, 100, 10)))  # 0..90 s
    doubled = traffic.from_trace(path, rate_scale=2.0)
    assert [a.t for a in doubled.arrivals] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
    assert doubled.duration == 45
    sliced = traffic.from_trace(path, rate_scale=2.0, window=(10.0, 20.0))
    assert [(a.t, a.input_tokens) for a in sliced.arrivals] == [(0, 30), (5, 40), (10, 50), (15, 60)]
    assert sliced.duration == 20
    with pytest.raises(TraceError, match="after the traffic ends"):
        traffic.from_trace(path, window=(500.0, 10.0))
    with pytest.raises(TraceError, match="rate scale"):
        traffic.from_trace(path, rate_scale=0.0)


def test_the_shipped_azure_trace_keeps_its_attribution() -> None:
    offered = traffic.from_trace(arrivals.resolve("azure-conv"))
    assert len(offered.arrivals) == 19366
    assert 3490 < offered.duration < 3510
    assert "CC-BY 4.0" in offered.attribution and "Splitwise" in offered.attribution
    assert (arrivals.TRACES / "README.md").read_text().count("CC-BY 4.0") >= 1


def test_a_trace_that_cannot_be_read_is_a_lab_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"mine\.csv:2: expected 3 columns"):
        traffic.from_trace(_write(tmp_path, "1,10,5\n2,10\n").rename(tmp_path / "mine.csv"))


def test_scenario_traffic_is_what_the_sandbox_load_generator_sends() -> None:
    spec = scenario.load_scenario(SCENARIOS / "ci.yaml")
    offered = traffic.from_scenario(spec)
    model = spec.models[0]
    assert model.load is not None
    sent = list(
        load.requests(
            model.load,
            input_tokens=model.requests.input_tokens,
            output_tokens=model.requests.output_tokens,
            seed=load.model_seed(spec.seed, 0),
            end=spec.duration,
        )
    )
    assert [(a.t, a.input_tokens, a.output_tokens) for a in offered.arrivals] == sent
    assert offered.duration == spec.duration and offered.model_id == model.id
    assert 700 < len(sent) < 1000  # 3 -> 32 -> 3 req/s over 50 s
