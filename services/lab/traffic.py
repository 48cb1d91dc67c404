"""Arrivals: the requests a lab run offers, from a trace file or a shipped scenario (pure).

A trace is a CSV file with one row per request: its time, then its prompt and output token counts —
the Azure LLM inference traces' `TIMESTAMP,ContextTokens,GeneratedTokens`. The time is a date-time
(`2023-11-16 18:15:46.6805900`) or a number of seconds; times count from the first row and must not go
backwards. A first row whose token columns are not numbers is a header. A malformed row is an error
that names the file and the line.

`rate_scale` compresses time (2: twice the rate in half the time, the same requests); `window` then
takes a slice `[start, start + length)` of the result, in simulated seconds, shifted to start at 0.
A scenario's arrivals are drawn exactly as the live sandbox's load generator draws them (same seeds,
same length distributions), so a lab run and a sandbox run of one scenario offer the same requests.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from services.lab import TraceError
from services.sandbox import load, scenario

TRACES: Final = Path(__file__).parent / "traces"
SHIPPED: Final = {"azure-conv": TRACES / "azure-llm-inference-2023-conv.csv"}

# Kept with every result computed on the Azure trace (its licence, CC-BY 4.0, asks for attribution).
AZURE_ATTRIBUTION: Final = (
    "Trace: Azure LLM inference trace 2023, conversation (Microsoft, AzurePublicDataset, CC-BY 4.0); "
    'Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024.'
)
_AZURE_NAMES: Final = ("azure-llm-inference", "azurellminferencetrace")


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float  # seconds since the start of the run
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, kw_only=True)
class Traffic:
    """What a run offers: arrivals over `duration` seconds, and where they come from."""

    arrivals: tuple[Arrival, ...]
    duration: float
    source: str  # e.g. "trace azure-llm-inference-2023-conv.csv" or "scenario ci"
    model_id: str | None = None  # a scenario names its model; a trace takes the fleet's
    attribution: str = ""  # to show wherever results on this traffic are shown


def resolve_trace(value: str) -> Path:
    """A shipped trace by name (`azure-conv`) or a path."""
    return SHIPPED.get(value, Path(value))


def read_trace(path: Path) -> list[Arrival]:
    """The rows of a trace file as arrivals, times relative to the first row."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TraceError(f"{path}: not a CSV text file: {exc}") from None
    arrivals: list[Arrival] = []
    origin: float | None = None
    last = -math.inf
    for lineno, row in enumerate(rows, start=1):
        if not row or (len(row) == 1 and not row[0].strip()) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 3:
            raise TraceError(
                f"{path}:{lineno}: expected 3 columns (time, prompt tokens, output tokens), got {len(row)}"
            )
        if origin is None and not arrivals and not _is_int(row[1]) and not _is_int(row[2]):
            continue  # the header
        when = _seconds(row[0])
        if when is None:
            raise TraceError(f"{path}:{lineno}: {row[0]!r} is neither a date-time nor a number of seconds")
        tokens = [_positive_int(v) for v in row[1:]]
        if tokens[0] is None or tokens[1] is None:
            raise TraceError(
                f"{path}:{lineno}: token counts must be whole numbers >= 1, got {row[1]!r}, {row[2]!r}"
            )
        if when < last:
            raise TraceError(
                f"{path}:{lineno}: time goes backwards ({row[0].strip()} after an earlier row's later time)"
            )
        last = when
        if origin is None:
            origin = when
        arrivals.append(Arrival(t=when - origin, input_tokens=tokens[0], output_tokens=tokens[1]))
    if not arrivals:
        raise TraceError(f"{path}: no requests")
    return arrivals


def _is_int(text: str) -> bool:
    return text.strip().lstrip("+").isdigit()


def _positive_int(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit():
        return None
    value = int(text)
    return value if value >= 1 else None


def _seconds(text: str) -> float | None:
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) else None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def attribution_for(path: Path) -> str:
    name = path.name.lower()
    return AZURE_ATTRIBUTION if name.startswith(_AZURE_NAMES) else ""


def from_trace(
    path: Path, *, rate_scale: float = 1.0, window: tuple[float, float | None] | None = None
) -> Traffic:
    """A trace file's traffic, scaled in time, then sliced."""
    arrivals = scaled(read_trace(path), rate_scale)
    duration = arrivals[-1].t if arrivals else 0.0
    arrivals, duration = _windowed(arrivals, duration, window)
    return Traffic(
        arrivals=tuple(arrivals),
        duration=duration,
        source=f"trace {path.name}",
        attribution=attribution_for(path),
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
    arrivals: list[Arrival] = []
    if model.load is not None:
        arrivals = [
            Arrival(t=t, input_tokens=i, output_tokens=o)
            for t, i, o in load.requests(
                model.load,
                input_tokens=model.requests.input_tokens,
                output_tokens=model.requests.output_tokens,
                seed=load.model_seed(spec.seed, 0),
                end=spec.duration,
            )
        ]
    arrivals = scaled(arrivals, rate_scale)
    arrivals, duration = _windowed(arrivals, spec.duration / rate_scale, window)
    return Traffic(
        arrivals=tuple(arrivals), duration=duration, source=f"scenario {spec.name}", model_id=model.id
    )


def scaled(arrivals: Iterable[Arrival], factor: float) -> list[Arrival]:
    """The same requests at `factor` times the rate (time divided by `factor`)."""
    if not (factor > 0 and math.isfinite(factor)):
        raise TraceError(f"rate scale must be a positive number, got {factor}")
    return [
        Arrival(t=a.t / factor, input_tokens=a.input_tokens, output_tokens=a.output_tokens) for a in arrivals
    ]


def _windowed(
    arrivals: Sequence[Arrival], duration: float, window: tuple[float, float | None] | None
) -> tuple[list[Arrival], float]:
    if window is None:
        return list(arrivals), duration
    start, length = window
    if start < 0 or (length is not None and length <= 0):
        raise TraceError(f"window must start at >= 0 and last > 0 s, got start {start:g}, length {length}")
    if start >= duration:
        raise TraceError(f"window starts at {start:g}s, after the traffic ends ({duration:g}s)")
    end = duration if length is None else min(duration, start + length)
    sliced = [
        Arrival(t=a.t - start, input_tokens=a.input_tokens, output_tokens=a.output_tokens)
        for a in arrivals
        if start <= a.t < end
    ]
    return sliced, end - start
