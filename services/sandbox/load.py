"""Load: request-rate profiles, Poisson arrivals (pure), and the generator that feeds the router (I/O).

A profile maps seconds since the start of the run to requests per second. Arrivals are a
non-homogeneous Poisson process drawn by thinning (Lewis & Shedler): candidates at the profile's peak
rate, each kept with probability rate(t)/peak. Given a seed the arrival times are fixed, so a scenario
replays the same traffic every run. One profile is not drawn but replayed: `requests`, a slice of a
recorded request trace (arrivals.py), each request at its time with its own prompt and output lengths.

Exceptions::

    ValueError
    └── TraceError      a CSV trace that cannot be read (bad row, non-increasing time, negative rate),
                        or a request trace (arrivals.TraceError, the same class)
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import msgspec

from services.sandbox import arrivals, queueing
from services.sandbox.arrivals import TraceError


class Constant(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="constant", tag_field="kind"
):
    rps: float

    def rate(self, t: float) -> float:
        return self.rps

    def peak(self) -> float:
        return self.rps


class Ramp(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="ramp", tag_field="kind"
):
    """`start_rps` until `start`, linear to `end_rps` over `duration` seconds, then `end_rps`."""

    start_rps: float
    end_rps: float
    duration: float
    start: float = 0.0

    def rate(self, t: float) -> float:
        if t <= self.start:
            return self.start_rps
        if t >= self.start + self.duration:
            return self.end_rps
        return self.start_rps + (self.end_rps - self.start_rps) * (t - self.start) / self.duration

    def peak(self) -> float:
        return max(self.start_rps, self.end_rps)


class Step(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="step", tag_field="kind"
):
    """`initial_rps`, then each `[at, rps]` from its time on (a staircase)."""

    initial_rps: float
    steps: list[tuple[float, float]]

    def rate(self, t: float) -> float:
        current = self.initial_rps
        for at, rps in self.steps:
            if t >= at:
                current = rps
        return current

    def peak(self) -> float:
        return max([self.initial_rps, *(rps for _, rps in self.steps)])


class Spike(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="spike", tag_field="kind"
):
    """`base_rps`, jumping to `peak_rps` at `at` for `duration` seconds."""

    base_rps: float
    peak_rps: float
    at: float
    duration: float

    def rate(self, t: float) -> float:
        return self.peak_rps if self.at <= t < self.at + self.duration else self.base_rps

    def peak(self) -> float:
        return max(self.base_rps, self.peak_rps)


class Sine(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="sine", tag_field="kind"
):
    """A diurnal-like wave: mean + amplitude * sin(2π t / period + phase), never below zero."""

    mean_rps: float
    amplitude_rps: float
    period: float
    phase: float = 0.0

    def rate(self, t: float) -> float:
        return max(
            0.0, self.mean_rps + self.amplitude_rps * math.sin(2 * math.pi * t / self.period + self.phase)
        )

    def peak(self) -> float:
        return self.mean_rps + abs(self.amplitude_rps)


class Trace(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="trace", tag_field="kind"
):
    """A recorded trace: `(time, rps)` points inline or from a CSV file (header `time,rps`).

    Linear interpolation between points by default; `step` holds each value until the next point.
    Before the first point the first value applies, after the last point the last one.
    """

    points: list[tuple[float, float]] = []
    file: str | None = None  # resolved by the scenario loader relative to the scenario file
    interpolate: Literal["linear", "step"] = "linear"

    def rate(self, t: float) -> float:
        pts = self.points
        if not pts:
            return 0.0
        i = bisect.bisect_right([p[0] for p in pts], t)
        if i == 0:
            return pts[0][1]
        if i == len(pts):
            return pts[-1][1]
        (t0, r0), (t1, r1) = pts[i - 1], pts[i]
        if self.interpolate == "step" or t1 == t0:
            return r0
        return r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    def peak(self) -> float:
        return max((rps for _, rps in self.points), default=0.0)


class Requests(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="requests", tag_field="kind"
):
    """A slice of a recorded request trace, replayed as recorded: every request at its time with its
    own prompt and output tokens (the model's `requests:` lengths do not apply). `file` is a trace
    (arrivals.py: one row per request) or a shipped one by name (`azure-conv`); the replay starts
    `start` seconds into it (its own clock) and lasts the scenario's duration; `rate_scale` compresses
    time (2: twice the rate, so twice as much of the trace). `rate(t)` is the recorded arrival rate
    over the `RATE_WINDOW` seconds up to `t`, for the live view and the report.
    """

    file: str
    start: float = 0.0
    rate_scale: float = 1.0
    # Resolved by the scenario loader: every request from `start` to the trace's end as (seconds since
    # the replay began, prompt tokens, output tokens), and the trace's attribution (CC-BY asks for one).
    requests: list[tuple[float, int, int]] = []
    attribution: str = ""

    RATE_WINDOW: ClassVar[float] = 10.0

    def resolved(self, path: Path) -> Requests:
        """This replay of the trace at `path` (TraceError when it cannot be read or starts after its end)."""
        recorded = arrivals.read(path)
        sliced, _ = arrivals.window(recorded, recorded[-1].t, start=self.start, length=None)
        compressed = arrivals.scaled(sliced, self.rate_scale)
        return msgspec.structs.replace(
            self,
            file=str(path),
            requests=[(a.t, a.input_tokens, a.output_tokens) for a in compressed],
            attribution=arrivals.attribution_for(path),
        )

    def scaled(self, factor: float) -> Requests:
        """The same requests at `factor` times the rate (`--load-scale`): time divided by `factor`
        (0: none)."""
        if factor <= 0:
            return msgspec.structs.replace(self, requests=[])
        return msgspec.structs.replace(
            self,
            rate_scale=self.rate_scale * factor,
            requests=[(t / factor, i, o) for t, i, o in self.requests],
        )

    def rate(self, t: float) -> float:
        def upto(when: float) -> int:
            return bisect.bisect_right(self.requests, when, key=lambda r: r[0])

        return (upto(t) - upto(t - self.RATE_WINDOW)) / self.RATE_WINDOW

    def peak(self) -> float:
        """The highest `rate` (it is highest right at an arrival): one pass over the arrivals."""
        most, first = 0, 0
        for last, (t, _, _) in enumerate(self.requests):
            while self.requests[first][0] <= t - self.RATE_WINDOW:
                first += 1
            most = max(most, last - first + 1)
        return most / self.RATE_WINDOW


Profile = Constant | Ramp | Step | Spike | Sine | Trace | Requests


class RateProfile(Protocol):
    """What arrivals need from a profile; every `Profile` is one, and so is a scaled one."""

    def rate(self, t: float) -> float: ...

    def peak(self) -> float: ...


def read_trace_csv(path: Path) -> list[tuple[float, float]]:
    """Read `time,rps` rows (a header row is optional); times must increase, rates be >= 0."""
    points: list[tuple[float, float]] = []
    with path.open(newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or row[0].strip().startswith("#"):
                continue
            if lineno == 1 and row[0].strip().lower() == "time":
                continue
            if len(row) != 2:
                raise TraceError(f"{path}:{lineno}: expected 'time,rps', got {row!r}")
            try:
                t, rps = float(row[0]), float(row[1])
            except ValueError:
                raise TraceError(f"{path}:{lineno}: not numbers: {row!r}") from None
            if rps < 0:
                raise TraceError(f"{path}:{lineno}: negative rate {rps}")
            if points and t <= points[-1][0]:
                raise TraceError(f"{path}:{lineno}: time {t} does not increase")
            points.append((t, rps))
    if not points:
        raise TraceError(f"{path}: no data rows")
    return points


def poisson_arrivals(
    profile: RateProfile, *, seed: int, start: float = 0.0, end: float = math.inf
) -> Iterator[float]:
    """Arrival times in [start, end) of a Poisson process with rate `profile.rate(t)`, by thinning."""
    peak = profile.peak()
    if peak <= 0:
        return
    rng = random.Random(seed)
    t = start
    while True:
        t += rng.expovariate(peak)
        if t >= end:
            return
        if rng.random() * peak < profile.rate(t):
            yield t


def model_seed(scenario_seed: int, model_index: int) -> int:
    """The seed of one model's request stream in a scenario: one stream per model, fixed by the scenario."""
    return scenario_seed * 1000 + model_index


def requests(
    profile: RateProfile,
    *,
    input_tokens: queueing.LengthDist,
    output_tokens: queueing.LengthDist,
    seed: int,
    end: float = math.inf,
) -> Iterator[tuple[float, int, int]]:
    """`(arrival time, input tokens, output tokens)` of every request a load generator sends (pure).

    Lengths draw from their own stream (`seed + 1`) so changing the profile does not change request
    sizes. A request trace (`Requests`) is replayed as recorded instead. The live generator and the
    decision lab both take their traffic from here.
    """
    if isinstance(profile, Requests):
        yield from ((t, i, o) for t, i, o in profile.requests if t < end)
        return
    lengths = random.Random(seed + 1)
    for t in poisson_arrivals(profile, seed=seed, end=end):
        yield t, input_tokens.sample(lengths), output_tokens.sample(lengths)


# --- the generator (I/O) -----------------------------------------------------------------------


# `dispatch(model_id, input_tokens=…, output_tokens=…) -> bool`: `Router.route` fits.
Dispatch = Callable[..., bool]


class LoadGenerator:
    """Replays `poisson_arrivals` in real time for one model, handing each request to `dispatch`.

    `dispatch(model_id, input_tokens=…, output_tokens=…)` returns whether the gateway took the request
    (sent it to a replica or queued it); refused ones (a replica rejected it at once) are counted.
    """

    def __init__(
        self,
        *,
        model_id: str,
        profile: RateProfile,
        input_tokens: queueing.LengthDist,
        output_tokens: queueing.LengthDist,
        dispatch: Dispatch,
        seed: int,
        duration: float | None = None,
    ) -> None:
        self.model_id = model_id
        self.profile = profile
        self._input = input_tokens
        self._output = output_tokens
        self._dispatch = dispatch
        self._seed = seed
        self._duration = duration
        self.sent = 0
        self.refused = 0

    async def run(self) -> None:
        """Generate until the duration ends (or forever); cancel to stop early."""
        loop = asyncio.get_running_loop()
        epoch = loop.time()
        end = math.inf if self._duration is None else self._duration
        for t, input_tokens, output_tokens in requests(
            self.profile, input_tokens=self._input, output_tokens=self._output, seed=self._seed, end=end
        ):
            delay = epoch + t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            took = self._dispatch(self.model_id, input_tokens=input_tokens, output_tokens=output_tokens)
            if took:
                self.sent += 1
            else:
                self.refused += 1
        if self._duration is not None:
            await asyncio.sleep(max(0.0, epoch + self._duration - loop.time()))


def attribution(profile: RateProfile | None) -> str:
    """What results on this load must credit: a request trace's attribution, else nothing."""
    return profile.attribution if isinstance(profile, Requests) else ""


def expected_requests(profile: RateProfile, *, start: float, end: float, step: float = 0.01) -> float:
    """∫ rate dt over [start, end] (midpoint rule) — the mean count Poisson arrivals should match."""
    n = max(1, math.ceil((end - start) / step))
    width = (end - start) / n
    return sum(profile.rate(start + (i + 0.5) * width) for i in range(n)) * width


__all__ = [
    "Constant",
    "LoadGenerator",
    "Profile",
    "Ramp",
    "RateProfile",
    "Requests",
    "Sine",
    "Spike",
    "Step",
    "Trace",
    "TraceError",
    "attribution",
    "expected_requests",
    "model_seed",
    "poisson_arrivals",
    "read_trace_csv",
    "requests",
]
