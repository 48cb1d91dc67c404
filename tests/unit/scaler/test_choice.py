"""Cost-aware choice of variant, step distribution (both ways) and bounds."""

from __future__ import annotations

import pytest

from services.scaler.bounds import clamp
from services.scaler.choice import Variant, cheapest, distribute_scale_down, distribute_scale_up


def v(name: str, cost: float, current: int, *, min_replicas: int = 1, max_replicas: int | None = None) -> Variant:
    return Variant(name=name, cost=cost, min_replicas=min_replicas, max_replicas=max_replicas, current=current)


def test_scale_up_goes_to_cheapest() -> None:
    # docs/algorithms.md: A (cost 40) and B (cost 80), +1 on A.
    assert distribute_scale_up([v("b", 80, 1), v("a", 40, 1)], 1) == {"a": 1}


def test_scale_up_tie_goes_to_lowest_name() -> None:
    assert distribute_scale_up([v("zeta", 10, 1), v("alpha", 10, 1)], 1) == {"alpha": 1}


def test_scale_up_skips_a_variant_at_max() -> None:
    assert distribute_scale_up([v("a", 40, 3, max_replicas=3), v("b", 80, 1)], 1) == {"b": 1}


def test_proportional_step_spills_over_cheapest_first() -> None:
    variants = [v("a", 40, 1, max_replicas=2), v("b", 80, 1, max_replicas=3), v("c", 90, 1)]
    assert distribute_scale_up(variants, 4) == {"a": 1, "b": 2, "c": 1}


def test_scale_up_places_what_fits() -> None:
    variants = [v("a", 40, 1, max_replicas=2), v("b", 80, 2, max_replicas=2)]
    assert distribute_scale_up(variants, 3) == {"a": 1}
    assert distribute_scale_up([v("a", 40, 2, max_replicas=2)], 1) == {}


def test_scale_down_from_most_expensive_above_floor() -> None:
    # docs/algorithms.md: A one replica, B two -> -1 on B.
    assert distribute_scale_down([v("a", 40, 1), v("b", 80, 2)], 1) == {"b": 1}
    # A more expensive variant at its floor is skipped.
    assert distribute_scale_down([v("a", 40, 3), v("b", 80, 2, min_replicas=2)], 1) == {"a": 1}


def test_several_replicas_go_from_the_most_expensive_first_down_to_their_floors() -> None:
    variants = [v("a", 40, 3), v("b", 80, 3, min_replicas=2)]
    assert distribute_scale_down(variants, 2) == {"b": 1, "a": 1}
    assert distribute_scale_down(variants, 9) == {"b": 1, "a": 2}


def test_scale_down_tie_goes_to_highest_name() -> None:
    assert distribute_scale_down([v("alpha", 10, 2), v("zeta", 10, 2)], 1) == {"zeta": 1}


def test_scale_down_never_below_one_even_with_min_zero() -> None:
    # docs/algorithms.md: one replica each -> hold, neither is above max(minReplicas, 1).
    assert distribute_scale_down([v("a", 40, 1, min_replicas=0), v("b", 80, 1, min_replicas=0)], 1) == {}


def test_cheapest_skips_variants_that_cannot_run() -> None:
    assert cheapest([v("a", 10, 0, max_replicas=0), v("b", 20, 0)]) == v("b", 20, 0)
    assert cheapest([]) is None


@pytest.mark.parametrize(
    ("replicas", "lo", "hi", "expected"),
    [(3, 1, None, 3), (0, 1, None, 1), (5, 1, 3, 3), (2, 2, 4, 2), (7, 0, 7, 7)],
)
def test_clamp(replicas: int, lo: int, hi: int | None, expected: int) -> None:
    assert clamp(replicas, lo, hi) == expected


def test_a_paused_cheapest_variant_does_not_stall_its_group() -> None:
    paused = Variant(name="a", cost=10, min_replicas=1, max_replicas=None, current=1, frozen=True)
    active = Variant(name="b", cost=80, min_replicas=1, max_replicas=None, current=1)
    assert distribute_scale_up([paused, active], 2) == {"b": 2}
    # When every variant is paused the step is still decided (and reported), just not applied.
    assert distribute_scale_up([paused], 1) == {"a": 1}
    big_paused = Variant(name="z", cost=99, min_replicas=1, max_replicas=None, current=3, frozen=True)
    cheap_active = Variant(name="c", cost=5, min_replicas=1, max_replicas=None, current=3)
    assert distribute_scale_down([big_paused, cheap_active], 1) == {"c": 1}
