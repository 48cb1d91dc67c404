"""The HPA algorithm against hand-computed cases: tolerance, missing pods, scale-up policy limits,
the scale-down stabilization window (highest recommendation over 300 s), bounds (docs/lab.md)."""

from __future__ import annotations

import pytest

from services.lab import hpa


@pytest.mark.parametrize(
    ("kv", "expected"),
    [
        # 4 pods averaging 0.75: 750m / 700m = 1.071, within the 0.1 tolerance: no change.
        (0.75, 4),
        # 0.78: 1.114 > 1.1, ceil(1.114 x 4) = ceil(4.457) = 5.
        (0.78, 5),
        # 0.35: ratio 0.5, ceil(0.5 x 4) = 2.
        (0.35, 2),
        # 0.63: 0.9 -> |1 - 0.9| = 0.1 (0.09999999999999998 in floating point): within tolerance.
        (0.63, 4),
    ],
)
def test_pods_metric_average_value_and_tolerance(kv: float, expected: int) -> None:
    values: dict[str, float | None] = {f"p{i}": kv for i in range(4)}
    assert hpa.pods_metric_replicas(current=4, values=values, target=0.7) == expected


def test_starting_pods_count_as_idle_on_a_scale_up_and_can_cancel_it() -> None:
    # Three pods at 0.9 and one starting (no metric): 1.286 > 1, the starting pod counts as 0:
    # 2700m / 4 = 675m, 0.964 < 1 — the direction would flip, so the HPA keeps 4.
    values: dict[str, float | None] = {"a": 0.9, "b": 0.9, "c": 0.9, "new": None}
    assert hpa.pods_metric_replicas(current=4, values=values, target=0.7) == 4
    # Three at 0.95 and one starting: 1.357 -> (2850 + 0) / 4 = 712m, 1.018: within tolerance, keep 4.
    values = {"a": 0.95, "b": 0.95, "c": 0.95, "new": None}
    assert hpa.pods_metric_replicas(current=4, values=values, target=0.7) == 4
    # Two at 1.0 and one starting: 1.4286 -> (2000 + 0) / 3 = 666m = 0.951: flips, keep 3.
    assert hpa.pods_metric_replicas(current=3, values={"a": 1.0, "b": 1.0, "new": None}, target=0.7) == 3


def test_missing_pods_count_at_the_target_on_a_scale_down() -> None:
    # Three at 0.3 (ratio 0.4286) and one missing: (900 + 700) / 4 = 400m, 0.571, ceil(0.571 x 4) = 3.
    values: dict[str, float | None] = {"a": 0.3, "b": 0.3, "c": 0.3, "new": None}
    assert hpa.pods_metric_replicas(current=4, values=values, target=0.7) == 3


def test_no_metric_at_all_means_no_proposal() -> None:
    assert hpa.pods_metric_replicas(current=2, values={"a": None, "b": None}, target=0.7) is None


@pytest.mark.parametrize(
    ("value", "pods", "expected"),
    [
        (11.0, 10, 11),  # 11000 / 10000 = 1.1; |1 - 1.1| = 0.10000000000000009 > 0.1: ceil(11) = 11
        (10.5, 10, 10),  # 1.05: within tolerance
        (3.0, 5, 3),  # 0.6: ceil(3000 / 1000) = 3
        (23.0, 2, 5),  # queue of 23 with target 5 per replica: ceil(23000 / 5000) = 5
        (0.0, 4, 0),  # nothing waiting: 0 (the HPA's bounds bring it back to minReplicas)
    ],
)
def test_external_metric_average_value(value: float, pods: int, expected: int) -> None:
    target = 5.0 if value == 23.0 else 1.0
    assert hpa.external_metric_replicas(status_replicas=pods, value=value, target=target) == expected


def test_scale_up_is_limited_to_max_100_percent_or_4_pods_per_15_seconds() -> None:
    h = hpa.HPA(min_replicas=1, max_replicas=50)
    # From 2: max(ceil(2 x 2) = 4, 2 + 4 = 6) = 6.
    assert h.reconcile(now=0.0, current=2, proposal=20) == 6
    # 10 s later the period still holds the +4: it started at 2, so the limit is still 6.
    assert h.reconcile(now=10.0, current=6, proposal=20) == 6
    # At 15 s the event (at 0) is no longer after 15 - 15 = 0: from 6, max(12, 10) = 12.
    assert h.reconcile(now=15.0, current=6, proposal=20) == 12
    # From 12 at 30 s: max(24, 16) = 24, and 20 is below that.
    assert h.reconcile(now=30.0, current=12, proposal=20) == 20


def test_scale_down_waits_for_the_highest_recommendation_of_300_seconds() -> None:
    h = hpa.HPA(min_replicas=1, max_replicas=20)
    # A new HPA starts its window full of the current count (10 at t=0).
    assert h.reconcile(now=0.0, current=10, proposal=4) == 10
    t = 15.0
    while t < 300.0:
        proposal = 7 if t == 105.0 else 4
        assert h.reconcile(now=t, current=10, proposal=proposal) == 10, t
        t += 15.0
    # At 300 s the t=0 recommendation (10) is no longer after 300 - 300; the highest left is 7 (t=105).
    assert h.reconcile(now=300.0, current=10, proposal=4) == 7
    # At 405 s the 7 is out too (105 is not after 405 - 300): 4. 100 % per 15 s allows it at once.
    assert h.reconcile(now=405.0, current=7, proposal=4) == 4


def test_scale_up_is_not_stabilized() -> None:
    h = hpa.HPA(min_replicas=1, max_replicas=20)
    assert h.reconcile(now=0.0, current=3, proposal=2) == 3
    assert h.reconcile(now=15.0, current=3, proposal=5) == 5


def test_bounds_come_first_and_zero_means_disabled() -> None:
    h = hpa.HPA(min_replicas=2, max_replicas=5)
    assert h.reconcile(now=0.0, current=7, proposal=None) == 5  # above max: to max, no metric needed
    assert h.reconcile(now=0.0, current=1, proposal=None) == 2  # below min
    assert h.reconcile(now=0.0, current=0, proposal=9) == 0  # at zero with min > 0: autoscaling disabled
    assert h.reconcile(now=0.0, current=3, proposal=None) == 3  # no metric: no change
    assert h.reconcile(now=15.0, current=4, proposal=40) == 5  # never above max
    with pytest.raises(ValueError, match="minReplicas"):
        hpa.HPA(min_replicas=0, max_replicas=3)
