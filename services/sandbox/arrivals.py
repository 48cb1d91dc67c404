"""Recorded arrivals: request traces, one row per request, read, compressed in time and sliced (pure).

A trace is a CSV file with one row per request: its time, then its prompt and output token counts —
the Azure LLM inference traces' `TIMESTAMP,ContextTokens,GeneratedTokens`. The time is a date-time
(`2023-11-16 18:15:46.6805900`) or a number of seconds; times count from the first row and must not go
backwards. A first row whose token columns are not numbers is a header. A malformed row is an error
that names the file and the line.

The sandbox replays a slice of one as a scenario's load (`kind: requests`, load.py), and the decision
lab runs whole traces (services/lab/traffic.py): both read them here. The traces wva ships are in
`traces/` beside this module, each with its attribution (README.md there).

Exceptions::

    ValueError
    └── TraceError      a trace that cannot be read (names the file and the line), or a bad scale or slice
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

TRACES: Final = Path(__file__).parent / "traces"
SHIPPED: Final = {"azure-conv": TRACES / "azure-llm-inference-2023-conv.csv"}

# Kept with every result computed on the Azure trace (its licence, CC-BY 4.0, asks for attribution).
AZURE_ATTRIBUTION: Final = (
    "Trace: Azure LLM inference trace 2023, conversation (Microsoft, AzurePublicDataset, CC-BY 4.0); "
    'Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024.'
)
_AZURE_NAMES: Final = ("azure-llm-inference", "azurellminferencetrace")


class TraceError(ValueError):
    """A trace that cannot be read, or a scale or slice that cannot be applied to it."""


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float  # seconds since the start of the run
    input_tokens: int
    output_tokens: int


def resolve(value: str) -> Path:
    """A shipped trace by name (`azure-conv`) or a path."""
    return SHIPPED.get(value, Path(value))


def read(path: Path) -> list[Arrival]:
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
    """What results on this trace must credit (empty for a trace wva does not know)."""
    name = path.name.lower()
    return AZURE_ATTRIBUTION if name.startswith(_AZURE_NAMES) else ""


def scaled(arrivals: Iterable[Arrival], factor: float) -> list[Arrival]:
    """The same requests at `factor` times the rate (time divided by `factor`)."""
    if not (factor > 0 and math.isfinite(factor)):
        raise TraceError(f"rate scale must be a positive number, got {factor}")
    return [
        Arrival(t=a.t / factor, input_tokens=a.input_tokens, output_tokens=a.output_tokens) for a in arrivals
    ]


def window(
    arrivals: Sequence[Arrival], duration: float, *, start: float, length: float | None
) -> tuple[list[Arrival], float]:
    """The arrivals in `[start, start + length)` (from `start` on, all of them, without a length),
    shifted to start at 0, and the slice's duration; `duration` is how long the arrivals last."""
    if start < 0 or (length is not None and length <= 0):
        raise TraceError(f"window must start at >= 0 and last > 0 s, got start {start:g}, length {length}")
    if start >= duration:
        raise TraceError(f"window starts at {start:g}s, after the traffic ends ({duration:g}s)")
    end = duration if length is None else min(duration, start + length)
    sliced = [
        Arrival(t=a.t - start, input_tokens=a.input_tokens, output_tokens=a.output_tokens)
        for a in arrivals
        if start <= a.t and (a.t < end or length is None)
    ]
    return sliced, end - start
