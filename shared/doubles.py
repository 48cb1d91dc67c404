"""Optional figures kept as doubles in an ``array('d')`` (8 bytes each, where a float object takes 24):
NaN stands for an absent figure, which is why only finite figures may be kept this way
(docs/benchmarks.md, "Memory per tracked VA")."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from typing import Final

ABSENT: Final = math.nan


def doubles(values: Iterable[float | None]) -> array[float]:
    """The figures as doubles, None as NaN."""
    return array("d", [ABSENT if v is None else v for v in values])


def figure(value: float) -> float | None:
    """A kept double as the figure it stands for: None for NaN."""
    return None if value != value else value
