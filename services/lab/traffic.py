"""Arrivals: the requests a lab run offers, from a trace file or a shipped scenario (pure).

A trace is a CSV file with one row per request (its time, prompt and output tokens: the Azure LLM
inference traces' format), read by the sandbox's reader (services/sandbox/arrivals.py, which the
sandbox's `kind: requests` load uses too); the shipped traces are there as well.

`rate_scale` compresses time (2: twice the rate in half the time, the same requests); `window` then
takes a slice `[start, start + length)` of the result, in simulated seconds, shifted to start at 0.
A scenario's arrivals are drawn exactly as the live sandbox's load generator draws them (same seeds,
same length distributions), so a lab run and a sandbox run of one scenario offer the same requests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from services.lab import TraceError
from services.sandbox import arrivals, load, scenario
from services.sandbox.arrivals import Arrival

__all__ = ["Arrival", "Traffic", "from_scenario", "from_trace"]


@dataclass(frozen=True, kw_only=True)
class Traffic:
    """What a run offers: arrivals over `duration` seconds, and where they come from."""

    arrivals: tuple[Arrival, ...]
    duration: float
    source: str  # e.g. "trace azure-llm-inference-2023-conv.csv" or "scenario ci"
    model_id: str | None = None  # a scenario names its model; a trace takes the fleet's
    attribution: str = ""  # to show wherever results on this traffic are shown


@contextlib.contextmanager
def _as_lab_error() -> Iterator[None]:
    """The sandbox's trace errors as the lab's (a LabError: `wva lab` exits 2 with the message)."""
    try:
        yield
    except arrivals.TraceError as exc:
        raise TraceError(str(exc)) from None


def from_trace(
    path: Path, *, rate_scale: float = 1.0, window: tuple[float, float | None] | None = None
) -> Traffic:
    """A trace file's traffic, scaled in time, then sliced."""
    with _as_lab_error():
        offered = arrivals.scaled(arrivals.read(path), rate_scale)
        duration = offered[-1].t if offered else 0.0
        offered, duration = _windowed(offered, duration, window)
    return Traffic(
        arrivals=tuple(offered),
        duration=duration,
        source=f"trace {path.name}",
        attribution=arrivals.attribution_for(path),
    )


def from_scenario(
    spec: scenario.Scenario, *, rate_scale: float = 1.0, window: tuple[float, float | None] | None = None
) -> Traffic:
    """The scenario's load, drawn as `load.LoadGenerator` draws it for the live sandbox."""
    if len(spec.models) != 1:
        raise TraceError(
            f"scenario {spec.name!r}: the lab simulates one model, the scenario has {len(spec.models)}"
        )
    model = spec.models[0]
    offered: list[Arrival] = []
    if model.load is not None:
        offered = [
            Arrival(t=t, input_tokens=i, output_tokens=o)
            for t, i, o in load.requests(
                model.load,
                input_tokens=model.requests.input_tokens,
                output_tokens=model.requests.output_tokens,
                seed=load.model_seed(spec.seed, 0),
                end=spec.duration,
            )
        ]
    with _as_lab_error():
        offered = arrivals.scaled(offered, rate_scale)
        offered, duration = _windowed(offered, spec.duration / rate_scale, window)
    return Traffic(
        arrivals=tuple(offered),
        duration=duration,
        source=f"scenario {spec.name}",
        model_id=model.id,
        attribution=load.attribution(model.load),
    )


def _windowed(
    offered: list[Arrival], duration: float, window: tuple[float, float | None] | None
) -> tuple[list[Arrival], float]:
    if window is None:
        return offered, duration
    start, length = window
    return arrivals.window(offered, duration, start=start, length=length)
