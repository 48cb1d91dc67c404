"""Load profiles give the asked rates, and Poisson arrivals follow them (deterministically per seed)."""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path

import pytest

from services.sandbox import load, queueing


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (load.Constant(rps=4), [(0, 4), (100, 4)]),
        (
            load.Ramp(start_rps=2, end_rps=12, start=10, duration=20),
            [(0, 2), (10, 2), (20, 7), (30, 12), (99, 12)],
        ),
        (load.Step(initial_rps=1, steps=[(10, 5), (20, 3)]), [(0, 1), (9.99, 1), (10, 5), (25, 3)]),
        (load.Spike(base_rps=2, peak_rps=20, at=30, duration=10), [(29.9, 2), (30, 20), (39.9, 20), (40, 2)]),
        (load.Sine(mean_rps=5, amplitude_rps=3, period=40), [(0, 5), (10, 8), (20, 5), (30, 2)]),
        (load.Sine(mean_rps=1, amplitude_rps=3, period=40), [(30, 0)]),  # never negative
        (load.Trace(points=[(0, 1), (10, 11), (20, 5)]), [(-5, 1), (5, 6), (15, 8), (30, 5)]),
        (load.Trace(points=[(0, 1), (10, 11)], interpolate="step"), [(5, 1), (10, 11)]),
    ],
)
def test_profile_rates(profile: load.Profile, expected: list[tuple[float, float]]) -> None:
    for t, rps in expected:
        assert profile.rate(t) == pytest.approx(rps, abs=1e-9), t
    assert profile.peak() >= max(profile.rate(t / 10) for t in range(0, 1000))


@pytest.mark.parametrize(
    "profile",
    [
        load.Constant(rps=20),
        load.Ramp(start_rps=0, end_rps=40, duration=100),
        load.Spike(base_rps=5, peak_rps=60, at=40, duration=20),
        load.Sine(mean_rps=20, amplitude_rps=15, period=50),
    ],
)
def test_poisson_arrivals_match_the_profile(profile: load.Profile) -> None:
    arrivals = list(load.poisson_arrivals(profile, seed=11, end=100))
    assert arrivals == sorted(arrivals)
    assert all(0 <= t < 100 for t in arrivals)
    for start, end in [(0, 50), (50, 100)]:
        mean = load.expected_requests(profile, start=start, end=end)
        count = sum(start <= t < end for t in arrivals)
        assert abs(count - mean) < 4 * math.sqrt(mean) + 1  # within 4 sigma of a Poisson count


def test_poisson_arrivals_are_deterministic_per_seed() -> None:
    profile = load.Constant(rps=10)
    a = list(load.poisson_arrivals(profile, seed=1, end=10))
    assert a == list(load.poisson_arrivals(profile, seed=1, end=10))
    assert a != list(load.poisson_arrivals(profile, seed=2, end=10))
    assert list(load.poisson_arrivals(load.Constant(rps=0), seed=1, end=10)) == []


def test_inter_arrival_times_are_exponential() -> None:
    arrivals = list(load.poisson_arrivals(load.Constant(rps=50), seed=5, end=200))
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    mean = sum(gaps) / len(gaps)
    var = sum((g - mean) ** 2 for g in gaps) / len(gaps)
    assert mean == pytest.approx(1 / 50, rel=0.05)
    assert math.sqrt(var) / mean == pytest.approx(1.0, rel=0.05)  # coefficient of variation of Exp is 1


def test_csv_trace(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("time,rps\n0,1\n# a comment\n60,10\n120,2.5\n")
    assert load.read_trace_csv(path) == [(0, 1), (60, 10), (120, 2.5)]
    path.write_text("time,rps\n0,1\n0,2\n")
    with pytest.raises(load.TraceError, match=r"trace.csv:3: time 0.0 does not increase"):
        load.read_trace_csv(path)
    path.write_text("0,abc\n")
    with pytest.raises(load.TraceError, match="not numbers"):
        load.read_trace_csv(path)


async def test_generator_dispatches_in_real_time_and_counts_refusals() -> None:
    calls: list[tuple[str, int, int]] = []

    def dispatch(model_id: str, *, input_tokens: int, output_tokens: int) -> bool:
        calls.append((model_id, input_tokens, output_tokens))
        return len(calls) % 2 == 0  # every other request finds no replica

    generator = load.LoadGenerator(
        model_id="m",
        profile=load.Constant(rps=200),
        input_tokens=queueing.Fixed(value=7),
        output_tokens=queueing.Uniform(min=3, max=5),
        dispatch=dispatch,
        seed=1,
        duration=0.3,
    )
    started = asyncio.get_running_loop().time()
    await generator.run()
    elapsed = asyncio.get_running_loop().time() - started
    assert elapsed == pytest.approx(0.3, abs=0.1)
    expected = list(load.poisson_arrivals(load.Constant(rps=200), seed=1, end=0.3))
    assert len(calls) == len(expected) > 30
    assert all(m == "m" and i == 7 and 3 <= o <= 5 for m, i, o in calls)
    assert generator.sent + generator.refused == len(calls)
    assert generator.refused == (len(calls) + 1) // 2


# --------------------------------------------------------------------------- recorded requests

TRACE = "time,prompt,output\n100,10,5\n101,20,6\n103,30,7\n109,40,8\n110,50,9\n"


def _replay(tmp_path: Path, **kw: float) -> load.Requests:
    (tmp_path / "t.csv").write_text(TRACE)
    return load.Requests(file="t.csv", **kw).resolved(tmp_path / "t.csv")  # type: ignore[arg-type]


def test_a_request_trace_is_replayed_as_recorded_from_its_start_and_compressed(tmp_path: Path) -> None:
    replay = _replay(tmp_path, start=1.0, rate_scale=2.0)  # from 101 on: times (t - 100 - 1) / 2
    assert replay.requests == [(0.0, 20, 6), (1.0, 30, 7), (4.0, 40, 8), (4.5, 50, 9)]
    lengths = queueing.Fixed(value=1)  # the model's lengths do not apply to recorded requests
    sent = list(load.requests(replay, input_tokens=lengths, output_tokens=lengths, seed=3, end=4.5))
    assert sent == [(0.0, 20, 6), (1.0, 30, 7), (4.0, 40, 8)]
    assert load.attribution(replay) == "" and load.attribution(load.Constant(rps=1)) == ""


def test_a_request_trace_rate_counts_the_last_window_and_scales_with_the_load(tmp_path: Path) -> None:
    replay = _replay(tmp_path)  # arrivals at 0, 1, 3, 9, 10 s
    window = load.Requests.RATE_WINDOW
    assert [replay.rate(t) for t in (0.0, 3.0, 9.5, 10.0, 11.5, 30.0)] == [
        n / window for n in (1, 3, 4, 4, 3, 0)
    ]
    assert replay.peak() == 4 / window
    doubled = replay.scaled(2.0)
    assert [t for t, _, _ in doubled.requests] == [0.0, 0.5, 1.5, 4.5, 5.0]
    assert doubled.peak() == 5 / window and doubled.rate_scale == 2.0
    assert replay.scaled(0.0).requests == []


def test_the_azure_trace_keeps_its_attribution_in_a_replay() -> None:
    from services.sandbox import arrivals

    replay = load.Requests(file="azure-conv", start=60).resolved(arrivals.resolve("azure-conv"))
    assert "CC-BY 4.0" in load.attribution(replay) and "Splitwise" in load.attribution(replay)
    assert replay.requests[0][0] >= 0
