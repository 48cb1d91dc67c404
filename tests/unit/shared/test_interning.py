"""One object for equal values, bounded, never changing what a value reads as."""

from __future__ import annotations

import math

from shared.interning import Interner


def test_equal_values_come_back_as_one_object() -> None:
    shared: Interner[tuple[int, ...]] = Interner()
    first, second = tuple([1, 2, 3]), tuple([1, 2, 3])
    assert first is not second
    assert shared(first) is first and shared(second) is first


def test_equal_values_of_other_types_stay_apart() -> None:
    shared: Interner[float] = Interner()
    assert type(shared(1)) is int and type(shared(1.0)) is float  # 1 == 1.0, yet each keeps its type


def test_kept_values_come_back_as_they_came() -> None:
    shared: Interner[float] = Interner(keep=lambda v: not v)
    assert math.copysign(1, shared(0.0)) == 1 and math.copysign(1, shared(-0.0)) == -1
    assert len(shared) == 0


def test_the_table_starts_afresh_past_its_limit() -> None:
    shared: Interner[int] = Interner(limit=3)
    for n in range(1000, 1010):  # untrusted values cannot grow it
        shared(n)
        assert len(shared) <= 3
