"""The scaler state machine: grouping, the worked two-variant examples, timing, holds and actions."""

from __future__ import annotations

import math

import pytest

from services.scaler import reasons
from services.scaler.actions import Condition, Event, FetchAction, ScaleAction, Tick
from services.scaler.machine import PENDING_EXPIRY_SECONDS, Scaler
from services.scaler.scaling_config import ConfigSet, ScaleToZeroConfig, ScalingConfig
from shared.messages import Problem, TargetDeleted

from .builders import (
    NS,
    decisions,
    dt,
    feed,
    fetches,
    invalidation,
    scales,
    snapshot,
    statuses,
    summary,
    target,
)


def conditions_of(scaler: Scaler, actions: list[object], name: str) -> dict[str, Condition]:
    found = [s for s in statuses(actions) if s.name == name]  # type: ignore[arg-type]
    assert found, f"no StatusAction for {name}"
    return {c.type: c for c in found[-1].conditions}


# ---------------------------------------------------------------- docs/algorithms.md two-variant examples


def test_two_variants_saturating_scale_up_on_cheaper() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40)), (0, target("b", cost=80))])
    actions = feed(s, [(0, snapshot("a", [0.79], at=0)), (0, snapshot("b", [0.78], at=0))])
    assert summary(actions) == [
        ("a", 2, reasons.SCALE_UP_SPARE_KV_LOW),
        ("b", 1, reasons.SCALE_UP_SPARE_KV_LOW),
    ]
    assert scales(actions) == [
        ScaleAction(namespace=NS, name="a", deployment="a-deploy", replicas=2, expected_generation=1)
    ]
    d = decisions(actions)[0]
    assert d.applied and d.current == 1 and d.mode == "scale"
    assert d.numbers.avg_spare_kv == pytest.approx(0.015)
    assert d.numbers.needed == 3  # ceil(1.57 / 0.70)
    assert (d.numbers.step, d.numbers.chosen_variant) == (1, "a")
    assert decisions(actions)[1].numbers.chosen_variant == "a"


def test_two_variants_spare_capacity_scale_down_on_expensive() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40)), (0, target("b", cost=80, replicas=2))])
    events = []
    for t in (0, 30, 60, 90, 119, 120):
        events += [(t, snapshot("a", [0.10], at=t)), (t, snapshot("b", [0.15, 0.12], at=t))]
    actions = feed(s, events)
    assert summary(actions) == [
        ("a", 1, reasons.HOLD_STABILIZING),
        ("b", 2, reasons.HOLD_STABILIZING),
        ("a", 1, reasons.SCALE_DOWN_SPARE_CAPACITY),
        ("b", 1, reasons.SCALE_DOWN_SPARE_CAPACITY),
        # b's snapshot of the same instant: b has not reached 1 yet.
        ("a", 1, reasons.HOLD_TRANSITION),
        ("b", 1, reasons.HOLD_TRANSITION),
    ]
    assert [d.at for d in decisions(actions)][2] == dt(120)
    assert scales(actions) == [
        ScaleAction(namespace=NS, name="b", deployment="b-deploy", replicas=1, expected_generation=1)
    ]
    assert decisions(actions)[3].numbers.avg_spare_kv == pytest.approx(0.6767, abs=1e-4)


def test_two_variants_one_replica_each_hold_at_bounds() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40)), (0, target("b", cost=80))])
    events = []
    for t in (0, 40, 80, 120):
        events += [(t, snapshot("a", [0.10], at=t)), (t, snapshot("b", [0.15], at=t))]
    actions = feed(s, events)
    assert [r for _, _, r in summary(actions)] == [reasons.HOLD_STABILIZING] * 2 + [reasons.HOLD_AT_BOUNDS] * 2
    assert scales(actions) == []


# ---------------------------------------------------------------- stabilization timing


def steady(s: Scaler, times: list[float], kv: list[float]) -> list[object]:
    return feed(s, [(t, snapshot("a", kv, at=t)) for t in times])  # type: ignore[return-value]


def test_scale_down_waits_the_stabilization_window() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2))])
    steady(s, [0, 40, 80, 119], [0.2, 0.2])
    last = s.last_decision(NS, "a")
    assert last is not None and last.reason == reasons.HOLD_STABILIZING and last.desired == 2
    actions = steady(s, [120], [0.2, 0.2])
    assert summary(actions) == [("a", 1, reasons.SCALE_DOWN_SPARE_CAPACITY)]  # type: ignore[arg-type]


def test_an_unsafe_moment_restarts_the_window() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2))])
    steady(s, [0], [0.2, 0.2])
    assert summary(steady(s, [60], [0.65, 0.72])) == [("a", 2, reasons.HOLD_NO_TRIGGER)]  # type: ignore[arg-type]
    steady(s, [61, 100, 150, 180], [0.2, 0.2])
    last = s.last_decision(NS, "a")
    assert last is not None and last.reason == reasons.HOLD_STABILIZING
    assert summary(steady(s, [181], [0.2, 0.2])) == [("a", 1, reasons.SCALE_DOWN_SPARE_CAPACITY)]  # type: ignore[arg-type]


def test_scale_up_is_immediate() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2))])
    steady(s, [0], [0.2, 0.2])
    actions = steady(s, [1], [0.85, 0.90])
    assert summary(actions) == [("a", 3, reasons.SCALE_UP_SATURATED)]  # type: ignore[arg-type]


# ---------------------------------------------------------------- staleness and invalidation


def test_stale_snapshot_holds_and_says_why() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2)), (0, snapshot("a", [0.65, 0.72], at=0))])
    assert decisions(feed(s, [(45, Tick())])) == []  # 45 s old is not older than 45 s
    actions = feed(s, [(46, Tick())])
    assert summary(actions) == [("a", 2, reasons.HOLD_STALE_METRICS)]
    cond = conditions_of(s, actions, "a")  # type: ignore[arg-type]
    assert (cond["MetricsAvailable"].status, cond["MetricsAvailable"].reason) == ("False", "MetricsStale")
    assert (cond["OptimizationReady"].status, cond["OptimizationReady"].reason) == ("False", "MetricsUnavailable")
    assert decisions(feed(s, [(60, Tick())])) == []  # unchanged, not repeated


def test_stale_metrics_never_scale_down() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2)), (0, snapshot("a", [0.2, 0.2], at=0))])
    actions = feed(s, [(t, Tick()) for t in range(10, 400, 10)])
    assert scales(actions) == []
    assert summary(actions) == [("a", 2, reasons.HOLD_STALE_METRICS)]


def test_invalidation_fetches_and_holds_until_a_fresh_snapshot() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2)), (0, snapshot("a", [0.65, 0.72], at=0))])
    actions = feed(s, [(10, invalidation("a", at=10))])
    assert fetches(actions) == [FetchAction(namespace=NS, name="a")]
    assert summary(actions) == [("a", 2, reasons.HOLD_INVALIDATED)]
    # A snapshot collected before the invalidation (in flight) does not count.
    assert decisions(feed(s, [(11, snapshot("a", [0.85, 0.9], at=9))])) == []
    actions = feed(s, [(12, snapshot("a", [0.85, 0.90], at=12))])
    assert summary(actions) == [("a", 3, reasons.SCALE_UP_SATURATED)]


def test_snapshot_of_an_older_generation_holds() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", generation=3)), (0, snapshot("a", [0.9], at=0, generation=2))])
    assert summary(actions)[-1] == ("a", 1, reasons.HOLD_INVALIDATED)
    actions = feed(s, [(5, snapshot("a", [0.9], at=5, generation=3))])
    assert summary(actions) == [("a", 2, reasons.SCALE_UP_SATURATED)]


def test_deleted_va_invalidation_does_not_fetch() -> None:
    s = Scaler()
    feed(s, [(0, target("a"))])
    assert fetches(feed(s, [(1, invalidation("a", at=1, reason="va_deleted"))])) == []


# ---------------------------------------------------------------- holds from a VA's state


def test_a_problem_on_one_variant_holds_the_group() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40)), (0, snapshot("a", [0.5], at=0))])
    bad = target("b", cost=80, problems=[Problem(field="spec.maxReplicas", message="below minReplicas")])
    actions = feed(s, [(1, bad), (1, snapshot("b", [0.9], at=1))])
    assert summary(actions)[-2:] == [("a", 1, reasons.HOLD_PROBLEMS), ("b", 1, reasons.HOLD_PROBLEMS)]
    assert "b: spec.maxReplicas: below minReplicas" in decisions(actions)[-1].detail
    assert scales(actions) == []
    cond = conditions_of(s, actions, "b")  # type: ignore[arg-type]
    assert (cond["OptimizationReady"].status, cond["OptimizationReady"].reason) == ("False", "OptimizationFailed")


def test_unresolved_target_holds() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", resolved=False)), (0, snapshot("a", [0.9], at=0))])
    assert summary(actions) == [("a", 1, reasons.HOLD_UNRESOLVED)]
    cond = conditions_of(s, actions, "a")  # type: ignore[arg-type]
    assert (cond["TargetResolved"].status, cond["TargetResolved"].reason) == ("False", "ScaleTargetNotFound")


def test_no_snapshot_and_unavailable_snapshot_hold() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", replicas=2))])
    assert summary(actions) == [("a", 2, reasons.HOLD_METRICS_UNAVAILABLE)]
    assert conditions_of(s, actions, "a")["MetricsAvailable"].reason == "MetricsMissing"  # type: ignore[arg-type]
    actions = feed(s, [(1, snapshot("a", [], at=1, status="unavailable"))])
    assert conditions_of(s, actions, "a")["MetricsAvailable"].reason == "PrometheusError"  # type: ignore[arg-type]
    assert scales(feed(s, [(t, snapshot("a", [], at=t, status="unavailable")) for t in range(2, 300, 15)])) == []


def test_nan_values_are_missing_for_that_replica_and_counted() -> None:
    s = Scaler()
    events: list[tuple[float, Event]] = [(0, target("a", replicas=2))]
    events += [(t, snapshot("a", [0.2, math.nan], waiting=[0.0, -1.0], at=t)) for t in range(0, 300, 15)]
    actions = feed(s, events)
    assert summary(actions) == [("a", 2, reasons.HOLD_METRICS_UNAVAILABLE)]
    # The decision did not change (still holding for metrics), its condition says why now.
    message = conditions_of(s, actions, "a")["MetricsAvailable"].message  # type: ignore[arg-type]
    assert message == "1 replica(s) without usable values (2 invalid)"
    assert scales(actions) == []


def test_partial_snapshot_missing_replicas_holds() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", replicas=2)), (0, snapshot("a", [0.9], at=0, status="partial"))])
    assert summary(actions)[-1] == ("a", 2, reasons.HOLD_METRICS_UNAVAILABLE)


# ---------------------------------------------------------------- transition guard


def test_not_ready_replicas_hold_the_group() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40, replicas=2, ready=1)), (0, target("b", cost=80))])
    actions = feed(s, [(0, snapshot("a", [0.9], at=0)), (0, snapshot("b", [0.9], at=0))])
    assert summary(actions)[-2:] == [("a", 2, reasons.HOLD_TRANSITION), ("b", 1, reasons.HOLD_TRANSITION)]


def test_last_desired_must_be_reached_before_the_next_step() -> None:
    s = Scaler()
    feed(s, [(0, target("a")), (0, snapshot("a", [0.9], at=0))])
    assert scales(feed(s, [(1, snapshot("a", [0.95], at=1))])) == []
    last = s.last_decision(NS, "a")
    assert last is not None and (last.desired, last.reason) == (2, reasons.HOLD_TRANSITION)
    # The Deployment moved to generation 2 with 2 replicas, one not ready yet: still in transition.
    feed(s, [(2, target("a", replicas=2, ready=1, generation=2))])
    assert scales(feed(s, [(3, snapshot("a", [0.95], at=3, generation=2))])) == []
    # Both ready and reporting: decide again.
    feed(s, [(4, target("a", replicas=2, generation=2))])
    actions = feed(s, [(5, snapshot("a", [0.95, 0.95], at=5, generation=2))])
    assert [a.replicas for a in scales(actions)] == [3]


def test_a_lost_scale_action_is_retried_after_expiry() -> None:
    s = Scaler()
    feed(s, [(0, target("a")), (0, snapshot("a", [0.9], at=0))])
    assert scales(feed(s, [(PENDING_EXPIRY_SECONDS, snapshot("a", [0.9], at=PENDING_EXPIRY_SECONDS))])) == []
    t = PENDING_EXPIRY_SECONDS + 1
    assert [a.replicas for a in scales(feed(s, [(t, snapshot("a", [0.9], at=t))]))] == [2]
    s.forget_pending(NS, "a")
    assert [a.replicas for a in scales(feed(s, [(t + 1, snapshot("a", [0.9], at=t + 1))]))] == [2]


# ---------------------------------------------------------------- actuation


def test_paused_va_is_decided_but_not_scaled() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", replicas=2, paused=True)), (0, snapshot("a", [0.85, 0.90], at=0))])
    assert summary(actions)[-1] == ("a", 3, reasons.SCALE_UP_SATURATED)
    assert not decisions(actions)[-1].applied
    assert scales(actions) == []


@pytest.mark.parametrize("mode", ["hpa", "dry-run"])
def test_modes_other_than_scale_do_not_patch(mode: str) -> None:
    s = Scaler(mode=mode)  # type: ignore[arg-type]
    actions = feed(s, [(0, target("a")), (0, snapshot("a", [0.9], at=0))])
    assert summary(actions)[-1] == ("a", 2, reasons.SCALE_UP_SATURATED)
    assert decisions(actions)[-1].mode == mode
    assert scales(actions) == []


def test_dry_run_va_is_not_patched() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", dry_run=True)), (0, snapshot("a", [0.9], at=0))])
    assert decisions(actions)[-1].mode == "dry-run"
    assert scales(actions) == []


def test_decisions_are_published_only_on_change() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2)), (0, snapshot("a", [0.65, 0.72], at=0))])
    actions = feed(s, [(t, snapshot("a", [0.65, 0.72], at=t)) for t in (10, 20, 30)])
    assert actions == []


def test_proportional_step_is_distributed_cheapest_first_within_max() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40, max_replicas=2)), (0, target("b", cost=80))])
    actions = feed(
        s,
        [(0, snapshot("a", [0.1], waiting=[10], at=0)), (0, snapshot("b", [0.1], waiting=[10], at=0))],
    )
    # needed ceil(20 / 2) = 10, step 8 capped to 4: a +1 (to its max 2), b +3.
    assert sorted((a.name, a.replicas) for a in scales(actions)) == [("a", 2), ("b", 4)]
    assert decisions(actions)[-1].numbers.chosen_variant == "a,b"


def test_every_variant_at_max_holds_at_bounds() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", max_replicas=1)), (0, snapshot("a", [0.9], at=0))])
    assert summary(actions)[-1] == ("a", 1, reasons.HOLD_AT_BOUNDS)


def test_result_is_clamped_to_bounds() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", replicas=5, max_replicas=3)), (0, snapshot("a", [0.5] * 5, at=0))])
    # Bounds apply even before metrics arrive (they never depend on metrics).
    assert summary(actions) == [("a", 3, reasons.BOUNDS_CLAMPED), ("a", 3, reasons.HOLD_TRANSITION)]
    assert decisions(actions)[0].numbers.bounded
    assert [a.replicas for a in scales(actions)] == [3]


def test_deleting_a_variant_re_evaluates_its_group() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40)), (0, target("b", cost=80, resolved=False))])
    feed(s, [(0, snapshot("a", [0.9], at=0))])
    actions = feed(s, [(1, TargetDeleted(namespace=NS, name="b", at=dt(1)))])
    assert summary(actions) == [("a", 2, reasons.SCALE_UP_SATURATED)]


def test_groups_are_per_namespace_and_model() -> None:
    s = Scaler()
    feed(s, [(0, target("a", model="m1")), (0, target("b", model="m2", resolved=False))])
    actions = feed(s, [(0, snapshot("a", [0.9], at=0, model="m1"))])
    assert summary(actions) == [("a", 2, reasons.SCALE_UP_SATURATED)]


# ---------------------------------------------------------------- scale to zero

STZ = ConfigSet(default=ScalingConfig(scale_to_zero=ScaleToZeroConfig(enabled=True, retention_seconds=600)))


def test_scale_to_zero_after_the_retention_window() -> None:
    s = Scaler(configs=STZ)
    feed(s, [(0, target("a", cost=40, min_replicas=0)), (0, target("b", cost=80, min_replicas=1))])
    events = []
    for t in range(0, 601, 30):
        events += [(t, snapshot("a", [0.0], at=t, rate=0.0)), (t, snapshot("b", [0.0], at=t, rate=0.0))]
    actions = feed(s, events)
    assert summary(actions)[-4:-2] == [("a", 0, reasons.SCALE_TO_ZERO), ("b", 1, reasons.SCALE_TO_ZERO)]
    assert decisions(actions)[-3].at == dt(600)
    assert [(a.name, a.replicas) for a in scales(actions)] == [("a", 0)]


def test_a_request_restarts_the_retention_window() -> None:
    s = Scaler(configs=STZ)
    feed(s, [(0, target("a", min_replicas=0))])
    events = [(t, snapshot("a", [0.0], at=t, rate=0.0 if t != 300 else 0.5)) for t in range(0, 901, 30)]
    actions = feed(s, events)
    assert scales(actions) == [] and s.last_decision(NS, "a").reason == reasons.HOLD_NO_TRIGGER  # type: ignore[union-attr]
    actions = feed(s, [(930, snapshot("a", [0.0], at=930, rate=0.0))])  # zero since 330: 600 s at 930
    assert summary(actions) == [("a", 0, reasons.SCALE_TO_ZERO)]


def test_at_zero_traffic_brings_the_cheapest_back() -> None:
    s = Scaler(configs=STZ)
    feed(s, [(0, target("a", cost=40, replicas=0, min_replicas=0)), (0, target("b", cost=80, replicas=0, min_replicas=0))])
    actions = feed(s, [(0, snapshot("a", [], at=0, rate=0.0)), (0, snapshot("b", [], at=0, rate=0.0))])
    assert summary(actions)[-2:] == [("a", 0, reasons.SCALE_TO_ZERO), ("b", 0, reasons.SCALE_TO_ZERO)]
    actions = feed(s, [(10, snapshot("b", [], at=10, rate=2.0))])
    assert summary(actions) == [("a", 1, reasons.SCALE_UP_FROM_ZERO), ("b", 0, reasons.SCALE_UP_FROM_ZERO)]


def test_disabled_scale_to_zero_keeps_one_on_the_cheapest() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40, min_replicas=0)), (0, target("b", cost=80, min_replicas=0))])
    feed(s, [(0, snapshot("a", [0.1], at=0)), (0, snapshot("b", [0.1], at=0))])
    # Someone scales both Deployments to zero. The floor needs no metrics: it never removes a replica.
    a0 = target("a", cost=40, min_replicas=0, replicas=0, generation=2)
    b0 = target("b", cost=80, min_replicas=0, replicas=0, generation=2)
    actions = feed(s, [(5, a0), (5, b0)])
    assert summary(actions) == [
        ("a", 0, reasons.HOLD_INVALIDATED),  # b still has one: the group is not at zero
        ("b", 1, reasons.HOLD_INVALIDATED),
        ("a", 1, reasons.SCALE_UP_FROM_ZERO),
        ("b", 0, reasons.HOLD_INVALIDATED),
    ]
    assert [(a.name, a.replicas) for a in scales(actions)] == [("a", 1)]


def test_idle_is_not_enough_without_opt_in() -> None:
    s = Scaler()
    feed(s, [(0, target("a", min_replicas=0))])
    actions = feed(s, [(t, snapshot("a", [0.0], at=t, rate=0.0)) for t in range(0, 1300, 30)])
    assert scales(actions) == []


# ---------------------------------------------------------------- determinism


def test_same_events_same_actions() -> None:
    def run() -> list[object]:
        s = Scaler()
        events = [(0, target("a", cost=40)), (0, target("b", cost=80, replicas=2))]
        for t in range(0, 400, 20):
            kv = 0.9 if 100 <= t < 140 else 0.1
            events += [(t, snapshot("a", [kv], at=t)), (t, snapshot("b", [0.15, 0.12], at=t)), (t, Tick())]
        return feed(s, events)  # type: ignore[return-value]

    assert run() == run()


def test_a_variant_moving_to_another_model_leaves_its_group() -> None:
    s = Scaler()
    feed(s, [(0, target("a")), (0, target("b", resolved=False)), (0, snapshot("a", [0.9], at=0))])
    actions = feed(s, [(1, target("b", model="other", resolved=False))])
    assert ("a", 2, reasons.SCALE_UP_SATURATED) in summary(actions)
    assert feed(s, [(2, TargetDeleted(namespace=NS, name="ghost", at=dt(2)))]) == []
