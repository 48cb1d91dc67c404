"""Traffic: the trace reader (rows, header, errors naming file and line), time scaling and windows,
and scenario traffic identical to what the live sandbox's load generator sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.lab import TraceError, traffic
from services.sandbox import load, scenario

SCENARIOS = Path(scenario.__file__).parent / "scenarios"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


def test_azure_rows_with_their_header_become_arrivals_from_the_first_row(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:50.9951690,12,1\n",
    )
    arrivals = traffic.read_trace(path)
    assert [(round(a.t, 6), a.input_tokens, a.output_tokens) for a in arrivals] == [
        (0.0, 374, 44),
        (4.314579, 396, 109),
        (4.314579, 12, 1),
    ]


def test_times_in_seconds_and_comments_are_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, "# seconds, prompt, output\n10.5,100,20\n\n12,50,5\n")
    assert [(a.t, a.input_tokens) for a in traffic.read_trace(path)] == [(0.0, 100), (1.5, 50)]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("time,prompt,output\n1,10,5\n2,10\n", 3, "expected 3 columns"),
        ("1,10,5\nyesterday,10,5\n", 2, "neither a date-time nor a number"),
        ("1,10,5\n2,ten,5\n", 2, "whole numbers >= 1"),
        ("1,10,5\n2,10,0\n", 2, "whole numbers >= 1"),
        ("1,10,5\n2,10,-3\n", 2, "whole numbers >= 1"),
        ("5,10,5\n4,10,5\n", 2, "time goes backwards"),
        ("1,10,5\n2,1.5,5\n", 2, "whole numbers >= 1"),
        ("1,10,5\nnan,10,5\n", 2, "neither a date-time nor a number"),
    ],
)
def test_a_malformed_row_names_the_file_and_the_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(TraceError, match=message) as caught:
        traffic.read_trace(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_an_empty_or_missing_trace_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no requests"):
        traffic.read_trace(_write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n"))
    with pytest.raises(TraceError, match="cannot read"):
        traffic.read_trace(tmp_path / "missing.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TraceError, match=r"binary\.csv"):
        traffic.read_trace(tmp_path / "binary.csv")


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
    offered = traffic.from_trace(traffic.resolve_trace("azure-conv"))
    assert len(offered.arrivals) == 19366
    assert 3490 < offered.duration < 3510
    assert "CC-BY 4.0" in offered.attribution and "Splitwise" in offered.attribution
    assert (traffic.TRACES / "README.md").read_text().count("CC-BY 4.0") >= 1


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
