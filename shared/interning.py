"""One object for equal values, so that thousands of VAs holding the same bounds, counts, conditions or
cache sizes hold one copy (docs/benchmarks.md, "Memory per tracked VA").

A table is bounded: past ``limit`` distinct values it starts afresh, so values from untrusted input
cannot grow it. Equal is not always the same: ``1 == 1.0`` and ``0.0 == -0.0``, so values are keyed
with their type, and a caller whose values may hold a signed zero says which to keep as they came
(``keep``): handing back another of two equal values must never change what a value reads as.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar, cast

T = TypeVar("T", bound=Hashable)


class Interner(Generic[T]):
    def __init__(self, *, limit: int = 4096, keep: Callable[[T], bool] | None = None) -> None:
        self._table: dict[tuple[type, Hashable], object] = {}
        self._limit = limit
        self._keep = keep

    def __call__(self, value: T) -> T:
        """The table's object equal to ``value`` (of its type), ``value`` itself the first time."""
        if self._keep is not None and self._keep(value):
            return value
        key = (type(value), value)
        found = self._table.get(key)
        if found is None:
            if len(self._table) >= self._limit:
                self._table.clear()
            self._table[key] = found = value
        return cast(T, found)

    def __len__(self) -> int:
        return len(self._table)
