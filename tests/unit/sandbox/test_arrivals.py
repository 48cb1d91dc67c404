"""Request traces (one row per request): the reader (rows, header, errors naming file and line), time
scaling and slices — what the sandbox's `kind: requests` load and the decision lab both read with."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.sandbox import arrivals
from services.sandbox.arrivals import TraceError


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
    rows = arrivals.read(path)
    assert [(round(a.t, 6), a.input_tokens, a.output_tokens) for a in rows] == [
        (0.0, 374, 44),
        (4.314579, 396, 109),
        (4.314579, 12, 1),
    ]


def test_times_in_seconds_and_comments_are_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, "# seconds, prompt, output\n10.5,100,20\n\n12,50,5\n")
    assert [(a.t, a.input_tokens) for a in arrivals.read(path)] == [(0.0, 100), (1.5, 50)]


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
        arrivals.read(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_an_empty_or_missing_trace_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no requests"):
        arrivals.read(_write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n"))
    with pytest.raises(TraceError, match="cannot read"):
        arrivals.read(tmp_path / "missing.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TraceError, match=r"binary\.csv"):
        arrivals.read(tmp_path / "binary.csv")


def test_scale_and_window() -> None:
    rows = [arrivals.Arrival(t=float(t), input_tokens=10 + t, output_tokens=5) for t in range(0, 100, 10)]
    doubled = arrivals.scaled(rows, 2.0)
    assert [a.t for a in doubled] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
    sliced, length = arrivals.window(doubled, 45.0, start=10.0, length=20.0)
    assert [(a.t, a.input_tokens) for a in sliced] == [(0, 30), (5, 40), (10, 50), (15, 60)]
    assert length == 20
    with pytest.raises(TraceError, match="after the traffic ends"):
        arrivals.window(doubled, 45.0, start=500.0, length=10.0)
    with pytest.raises(TraceError, match="rate scale"):
        arrivals.scaled(rows, 0.0)


def test_shipped_traces_by_name_and_their_attribution() -> None:
    path = arrivals.resolve("azure-conv")
    assert path.parent == arrivals.TRACES and path.is_file()
    assert "CC-BY 4.0" in arrivals.attribution_for(path)
    assert arrivals.attribution_for(Path("mine.csv")) == ""
    assert arrivals.resolve("mine.csv") == Path("mine.csv")
