"""The scaler core: grouping, the worked two-variant examples, pacing, holds, actuation outcomes as
events, authority-free safety rules (conflicts, holding), time without foreign clocks, and replay-exact
state (decisions carry their trigger and cursor; ticks that decide nothing change nothing)."""

from __future__ import annotations

import math

import msgspec
import pytest

from services.scaler import reasons
from services.scaler.actions import (
    Condition,
    ConfigReport,
    Forget,
    InputWarning,
    ScaleAction,
    StatusAction,
)
from services.scaler.core import BACKOFF_FIRST, Scaler
from services.scaler.events import ConfigData, Event, ScaleApplied, ScaleFailed, Started, Tick
from services.scaler.scaling_config import ConfigSet, ScaleToZeroConfig, ScalingConfig
from shared.messages import Cursor, Problem, TargetDeleted

from .builders import (
    MODEL,
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


def conditions_of(actions: list[object], name: str) -> dict[str, Condition]:
    found = [s for s in statuses(actions) if s.name == name]  # type: ignore[arg-type]
    assert found, f"no StatusAction for {name}"
    return {
        c.type: Condition(type=c.type, status=c.status, reason=c.reason, message=c.message)  # type: ignore[arg-type]
        for c in found[-1].status.conditions
    }


# ---------------------------------------------------------------- docs/algorithms.md two-variant examples


def test_two_variants_saturating_scale_up_on_cheaper() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40)), (0, target("b", cost=80))])
    actions = feed(s, [(0, snapshot("a", [0.79], at=0)), (0, snapshot("b", [0.78], at=0))])
    assert scales(actions) == [
        ScaleAction(
            namespace=NS, name="a", deployment="a-deploy", replicas=2, expected_generation=1, min_replicas=1, max_replicas=None,
            model_id=MODEL,
        )
    ]
    # b's decision is published at once; a's once its step has landed; then both wait for it.
    assert summary(actions) == [
        ("b", 1, reasons.SCALE_UP_SPARE_KV_LOW),
        ("a", 2, reasons.SCALE_UP_SPARE_KV_LOW),
        ("a", 2, reasons.HOLD_TRANSITION),
        ("b", 1, reasons.HOLD_TRANSITION),
    ]
    d = decisions(actions)[1]
    assert d.applied and d.outcome == "applied" and d.trigger == "scale_applied" and d.current == 1
    assert d.numbers.avg_spare_kv == pytest.approx(0.015)
    assert d.numbers.needed == 3  # ceil(1.57 / 0.70)
    assert (d.numbers.step, d.numbers.chosen_variant, d.numbers.recommended) == (1, "a", 2)
    assert decisions(actions)[0].numbers.chosen_variant == "a"


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
        ("a", 1, reasons.HOLD_TRANSITION),  # b has not reached 1 yet
        ("b", 1, reasons.HOLD_TRANSITION),
    ]
    assert decisions(actions)[3].at == dt(120)
    assert decisions(actions)[3].numbers.avg_spare_kv == pytest.approx(0.6767, abs=1e-4)
    assert [(a.name, a.replicas) for a in scales(actions)] == [("b", 1)]


def test_two_variants_one_replica_each_hold_at_bounds() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40)), (0, target("b", cost=80))])
    events = []
    for t in (0, 40, 80, 120):
        events += [(t, snapshot("a", [0.10], at=t)), (t, snapshot("b", [0.15], at=t))]
    actions = feed(s, events)
    assert {r for _, _, r in summary(actions)} == {reasons.HOLD_AT_BOUNDS}
    assert scales(actions) == []


# ---------------------------------------------------------------- pacing (HPA-style stabilization)


def steady(s: Scaler, times: list[float], kv: list[float], name: str = "a") -> list[object]:
    return feed(s, [(t, snapshot(name, kv, at=t)) for t in times])  # type: ignore[return-value]


def test_scale_down_waits_the_stabilization_window() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2))])
    (first,) = decisions(steady(s, [0], [0.2, 0.2]))  # type: ignore[arg-type]
    assert (first.reason, first.desired, first.numbers.recommended) == (reasons.HOLD_STABILIZING, 2, 1)
    assert "scale-down of a to 1 recommended for 0s of 120s" in first.detail
    assert decisions(steady(s, [40, 80, 119], [0.2, 0.2])) == []  # type: ignore[arg-type]
    actions = steady(s, [120], [0.2, 0.2])
    assert summary(actions)[0] == ("a", 1, reasons.SCALE_DOWN_SPARE_CAPACITY)  # type: ignore[arg-type]


def test_an_unsafe_moment_restarts_the_window() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2))])
    steady(s, [0], [0.2, 0.2])
    assert summary(steady(s, [60], [0.65, 0.72])) == [("a", 2, reasons.HOLD_NO_TRIGGER)]  # type: ignore[arg-type]
    steady(s, [61, 100, 150, 180], [0.2, 0.2])
    last = s.last_decision(NS, "a")
    assert last is not None and last.reason == reasons.HOLD_STABILIZING
    assert summary(steady(s, [181], [0.2, 0.2]))[0] == ("a", 1, reasons.SCALE_DOWN_SPARE_CAPACITY)  # type: ignore[arg-type]


def test_a_fresh_scaler_does_not_scale_down_before_a_whole_window() -> None:
    s = Scaler()
    feed(s, [(1000, target("a", replicas=3))])
    assert scales(steady(s, [1000, 1060, 1119], [0.1, 0.1, 0.1])) == []  # type: ignore[arg-type]
    assert [a.replicas for a in scales(steady(s, [1120], [0.1, 0.1, 0.1]))] == [2]  # type: ignore[arg-type]


def test_proportional_scale_down_removes_several_replicas_in_one_step() -> None:
    config = ConfigSet(default=ScalingConfig(scale_down_step="proportional"))
    s = Scaler(configs=config)
    feed(s, [(0, target("a", replicas=4))])
    steady(s, [0, 60], [0.1] * 4)
    actions = steady(s, [120], [0.1] * 4)
    # load 0.1 on 4 -> on 2: 0.2 (spare 0.6); on 1 it would be 0.4: still fine, but V1 never goes
    # below max(minReplicas, 1) -> 3 removed leaves 1 replica at 0.4 (spare 0.4 >= 0.1).
    assert [a.replicas for a in scales(actions)] == [1]  # type: ignore[arg-type]
    assert decisions(actions)[0].numbers.step == -3  # type: ignore[arg-type]


def test_scale_up_is_immediate() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2))])
    steady(s, [0], [0.2, 0.2])
    actions = steady(s, [1], [0.85, 0.90])
    assert summary(actions)[0] == ("a", 3, reasons.SCALE_UP_SATURATED)  # type: ignore[arg-type]


# ---------------------------------------------------------------- time: staleness and generations, not clocks


def test_stale_snapshot_holds_and_says_why() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2)), (0, snapshot("a", [0.65, 0.72], at=0))])
    assert decisions(feed(s, [(45, Tick())])) == []  # 45 s old is not older than 45 s
    actions = feed(s, [(46, Tick())])
    assert summary(actions) == [("a", 2, reasons.HOLD_STALE_METRICS)]
    cond = conditions_of(actions, "a")  # type: ignore[arg-type]
    assert (cond["MetricsAvailable"].status, cond["MetricsAvailable"].reason) == ("False", "MetricsStale")
    assert (cond["OptimizationReady"].status, cond["OptimizationReady"].reason) == ("False", "MetricsUnavailable")
    assert decisions(feed(s, [(60, Tick())])) == []  # unchanged, not repeated


def test_stale_metrics_never_scale_down() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2)), (0, snapshot("a", [0.2, 0.2], at=0))])
    actions = feed(s, [(t, Tick()) for t in range(10, 400, 10)])
    assert scales(actions) == []
    assert summary(actions) == [("a", 2, reasons.HOLD_STALE_METRICS)]


def test_a_snapshot_from_the_future_is_used_as_of_its_arrival_and_reported() -> None:
    # A fetcher whose clock runs an hour ahead: its snapshot is data like any other, fresh when it
    # arrives and stale 45 s later; the next real snapshot is not "older" than it.
    s = Scaler()
    feed(s, [(0, target("a", replicas=2))])
    actions = feed(s, [(10, snapshot("a", [0.2, 0.2], at=3610))])
    assert [w.reason for w in actions if isinstance(w, InputWarning)] == ["clock_skew"]
    assert decisions(feed(s, [(56, Tick())]))[0].reason == reasons.HOLD_STALE_METRICS
    actions = feed(s, [(60, snapshot("a", [0.9, 0.9], at=60))])
    assert summary(actions)[0] == ("a", 3, reasons.SCALE_UP_SATURATED)  # not ignored as "older"


def test_an_invalidation_holds_until_a_snapshot_of_the_new_generation() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2)), (0, snapshot("a", [0.65, 0.72], at=0))])
    actions = feed(s, [(10, invalidation("a", at=10, generation=2))])
    assert fetches(actions) == []  # the fetcher refreshes on the invalidation itself: one path
    assert summary(actions) == [("a", 2, reasons.HOLD_INVALIDATED)]
    # A snapshot of the old Deployment, even collected later, does not count.
    assert decisions(feed(s, [(11, snapshot("a", [0.85, 0.9], at=11, generation=1))])) == []
    feed(s, [(12, target("a", replicas=2, generation=2))])
    actions = feed(s, [(12, snapshot("a", [0.85, 0.90], at=12, generation=2))])
    assert summary(actions)[0] == ("a", 3, reasons.SCALE_UP_SATURATED)


def test_an_invalidation_stamped_in_the_future_holds_nothing() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2)), (0, snapshot("a", [0.65, 0.72], at=0))])
    assert decisions(feed(s, [(10, invalidation("a", at=99999, generation=1))])) == []
    assert summary(feed(s, [(11, snapshot("a", [0.85, 0.9], at=11))]))[0] == ("a", 3, reasons.SCALE_UP_SATURATED)


def test_snapshot_of_an_older_generation_holds() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", generation=3)), (0, snapshot("a", [0.9], at=0, generation=2))])
    assert summary(actions)[-1] == ("a", 1, reasons.HOLD_INVALIDATED)
    actions = feed(s, [(5, snapshot("a", [0.9], at=5, generation=3))])
    assert summary(actions)[0] == ("a", 2, reasons.SCALE_UP_SATURATED)


def test_a_tick_nudges_the_fetcher_only_for_a_missing_or_old_snapshot() -> None:
    s = Scaler()
    feed(s, [(0, target("a")), (0, target("b")), (0, snapshot("a", [0.5], at=0))])
    assert [f.name for f in fetches(feed(s, [(1, Tick())]))] == ["b"]  # a is fresh
    assert fetches(feed(s, [(5, Tick())])) == []  # b was nudged 4 s ago
    assert [f.name for f in fetches(feed(s, [(31, Tick())]))] == ["a", "b"]  # a is 31 s old (> 2 intervals)


# ---------------------------------------------------------------- holds from a VA's state


def test_a_problem_on_one_variant_holds_the_group() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40)), (0, snapshot("a", [0.5], at=0))])
    bad = target("b", cost=80, problems=[Problem(field="spec.maxReplicas", message="below minReplicas")])
    actions = feed(s, [(1, bad), (1, snapshot("b", [0.9], at=1))])
    assert summary(actions)[-2:] == [("a", 1, reasons.HOLD_PROBLEMS), ("b", 1, reasons.HOLD_PROBLEMS)]
    assert "b: spec.maxReplicas: below minReplicas" in decisions(actions)[-1].detail
    assert scales(actions) == []
    cond = conditions_of(actions, "b")  # type: ignore[arg-type]
    assert (cond["OptimizationReady"].status, cond["OptimizationReady"].reason) == ("False", "OptimizationFailed")


def test_unresolved_target_holds() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", resolved=False)), (0, snapshot("a", [0.9], at=0))])
    assert summary(actions) == [("a", 1, reasons.HOLD_UNRESOLVED)]
    cond = conditions_of(actions, "a")  # type: ignore[arg-type]
    assert (cond["TargetResolved"].status, cond["TargetResolved"].reason) == ("False", "ScaleTargetNotFound")


def test_no_snapshot_and_unavailable_snapshot_hold() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", replicas=2))])
    assert summary(actions) == [("a", 2, reasons.HOLD_METRICS_UNAVAILABLE)]
    assert conditions_of(actions, "a")["MetricsAvailable"].reason == "MetricsMissing"  # type: ignore[arg-type]
    actions = feed(s, [(1, snapshot("a", [], at=1, status="unavailable"))])
    assert conditions_of(actions, "a")["MetricsAvailable"].reason == "PrometheusError"  # type: ignore[arg-type]
    assert scales(feed(s, [(t, snapshot("a", [], at=t, status="unavailable")) for t in range(2, 300, 15)])) == []


def test_a_long_reason_from_the_wire_is_cut_before_it_reaches_a_status() -> None:
    s = Scaler()
    feed(s, [(0, target("a"))])
    unavailable = msgspec.structs.replace(snapshot("a", [], at=1, status="unavailable"), reason="x" * 5000)
    message = conditions_of(feed(s, [(1, unavailable)]), "a")["MetricsAvailable"].message  # type: ignore[arg-type]
    assert len(message) < 300


def test_nan_values_are_missing_for_that_replica_and_counted() -> None:
    s = Scaler()
    events: list[tuple[float, Event]] = [(0, target("a", replicas=2))]
    events += [(t, snapshot("a", [0.2, math.nan], waiting=[0.0, -1.0], at=t)) for t in range(0, 300, 15)]
    actions = feed(s, events)
    assert summary(actions) == [("a", 2, reasons.HOLD_METRICS_UNAVAILABLE)]
    message = conditions_of(actions, "a")["MetricsAvailable"].message  # type: ignore[arg-type]
    assert message == "1 replica(s) without usable values (2 invalid)"
    assert scales(actions) == []


def test_a_ready_pod_without_metrics_holds() -> None:
    from shared.messages import PodRef

    s = Scaler()
    pods = (PodRef(name="a-0", ready=True), PodRef(name="a-9", ready=True))
    t = msgspec.structs.replace(target("a", replicas=2), pods=pods)
    actions = feed(s, [(0, t), (0, snapshot("a", [0.9, 0.9], at=0, status="partial"))])
    assert summary(actions)[-1] == ("a", 2, reasons.HOLD_METRICS_UNAVAILABLE)
    assert "a-9" in conditions_of(actions, "a")["MetricsAvailable"].message  # type: ignore[arg-type]


# ---------------------------------------------------------------- two VAs, one Deployment


def test_two_vas_naming_one_deployment_hold_and_say_why() -> None:
    s = Scaler()
    # Two VAs (of different models, so in different groups) name the same Deployment.
    actions = feed(s, [(0, target("a", deployment="shared")), (0, target("b", deployment="shared", model="other"))])
    actions += feed(s, [(1, snapshot("a", [0.9], at=1)), (1, snapshot("b", [0.1], at=1, model="other"))])
    assert scales(actions) == []
    assert {(n, r) for n, _, r in summary(actions)} >= {("a", reasons.HOLD_CONFLICT), ("b", reasons.HOLD_CONFLICT)}
    for name in ("a", "b"):
        cond = conditions_of(actions, name)  # type: ignore[arg-type]
        assert cond["TargetResolved"].reason == reasons.SCALE_TARGET_CONFLICT
        assert "a, b" in cond["TargetResolved"].message
    # No fight: nothing moves while both exist, whatever their metrics say.
    assert scales(feed(s, [(t, snapshot("a", [0.9], at=t)) for t in (5, 10)])) == []
    actions = feed(s, [(20, TargetDeleted(namespace=NS, name="b", at=dt(20)))])
    assert [a.replicas for a in scales(actions)] == [2]


# ---------------------------------------------------------------- holding means holding; bounds


def test_out_of_bounds_spec_is_not_resized_while_metrics_are_missing() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", replicas=6, max_replicas=3))])
    assert scales(actions) == []
    assert summary(actions) == [("a", 6, reasons.HOLD_METRICS_UNAVAILABLE)]
    assert "a at 6 outside [1, 3]: corrected once a decision can be made" in decisions(actions)[0].detail


def test_out_of_bounds_spec_is_corrected_by_a_decision() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", replicas=5, max_replicas=3)), (0, snapshot("a", [0.5] * 5, at=0))])
    assert [a.replicas for a in scales(actions)] == [3]
    d = next(d for d in decisions(actions) if d.reason == reasons.BOUNDS_CLAMPED)
    assert d.desired == 3 and d.numbers.bounded


# ---------------------------------------------------------------- transition guard (V1)


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
    feed(s, [(2, target("a", replicas=2, ready=1, generation=2))])
    assert scales(feed(s, [(3, snapshot("a", [0.95], at=3, generation=2))])) == []
    feed(s, [(4, target("a", replicas=2, generation=2))])
    actions = feed(s, [(5, snapshot("a", [0.95, 0.95], at=5, generation=2))])
    assert [a.replicas for a in scales(actions)] == [3]


# ---------------------------------------------------------------- actuation outcomes are events


def test_the_decision_of_a_step_follows_its_outcome() -> None:
    s = Scaler()
    feed(s, [(0, target("a"))])
    actions = s.handle(snapshot("a", [0.9], at=1), 1)
    assert [type(a).__name__ for a in actions] == ["ScaleAction"]  # nothing published before the outcome
    # Events while the step is in flight change nothing yet ...
    assert s.handle(snapshot("a", [0.95], at=1.5), 1.5) == []
    # ... and are decided once it has landed.
    actions = s.handle(ScaleApplied(NS, "a", 2), 2)
    assert summary(actions) == [("a", 2, reasons.SCALE_UP_SATURATED), ("a", 2, reasons.HOLD_TRANSITION)]
    assert decisions(actions)[0].at == dt(2) and decisions(actions)[0].outcome == "applied"
    # The status written with the outcome says why that step was taken (not the evaluation before it).
    first = statuses(actions)[0].status.conditions
    assert [c.message for c in first if c.type == "OptimizationReady"] == [reasons.SCALE_UP_SATURATED]


def test_a_failed_step_is_published_as_not_applied_and_retried_after_a_backoff() -> None:
    s = Scaler()
    feed(s, [(0, target("a"))])
    assert [a.replicas for a in scales(s.handle(snapshot("a", [0.9], at=1), 1))] == [2]
    actions = s.handle(ScaleFailed(NS, "a", 2, "failed", "HTTP 500 Internal Server Error"), 1.2)
    (d,) = decisions(actions)
    assert (d.desired, d.applied, d.outcome, d.trigger) == (2, False, "failed", "scale_failed")
    assert d.detail.endswith("not applied (failed): HTTP 500 Internal Server Error")
    assert scales(actions) == []  # not at once ...
    assert scales(s.handle(snapshot("a", [0.9], at=3), 3)) == []
    assert [a.replicas for a in scales(s.handle(snapshot("a", [0.9], at=1.2 + BACKOFF_FIRST), 1.2 + BACKOFF_FIRST))] == [2]


def test_a_refused_step_says_why_in_the_vas_condition() -> None:
    s = Scaler()
    feed(s, [(0, target("a"))])
    s.handle(snapshot("a", [0.9], at=1), 1)
    actions = s.handle(ScaleFailed(NS, "a", 2, "refused", "bounds [1, 500] differ from the VariantAutoscaling's [1, 4]"), 1)
    cond = conditions_of(actions, "a")  # type: ignore[arg-type]
    assert (cond["TargetResolved"].status, cond["TargetResolved"].reason) == ("False", reasons.ACTUATION_REFUSED)
    assert "[1, 4]" in cond["TargetResolved"].message


def test_a_late_or_foreign_outcome_changes_nothing() -> None:
    s = Scaler()
    feed(s, [(0, target("a")), (0, snapshot("a", [0.5], at=0))])
    assert s.handle(ScaleApplied(NS, "a", 7), 1) == []
    assert s.handle(ScaleFailed(NS, "ghost", 2, "failed"), 1) == []


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
    assert decisions(actions)[-1].mode == mode and not decisions(actions)[-1].applied
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


def test_status_is_the_whole_subresource_with_stable_transition_times() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", replicas=2))])
    first = [a for a in actions if isinstance(a, StatusAction)][-1].status
    assert first.desired_optimized_alloc is not None and first.desired_optimized_alloc.num_replicas == 2
    body = msgspec.to_builtins(first)
    assert set(body) == {"desiredOptimizedAlloc", "actuation", "conditions"}
    assert body["conditions"][1]["lastTransitionTime"] == "1970-01-01T00:00:00Z"
    actions = feed(s, [(10, snapshot("a", [0.65, 0.72], at=10))])
    later = [a for a in actions if isinstance(a, StatusAction)][-1].status
    resolved = next(c for c in later.conditions if c.type == "TargetResolved")
    assert resolved.last_transition_time == "1970-01-01T00:00:00Z"  # its status did not change


def test_proportional_step_is_distributed_cheapest_first_within_max() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40, max_replicas=2)), (0, target("b", cost=80))])
    actions = feed(
        s,
        [(0, snapshot("a", [0.1], waiting=[10], at=0)), (0, snapshot("b", [0.1], waiting=[10], at=0))],
    )
    # needed ceil(20 / 2) = 10, step 8 capped to 4: a +1 (to its max 2), b +3.
    assert sorted((a.name, a.replicas) for a in scales(actions)) == [("a", 2), ("b", 4)]
    assert decisions(actions)[0].numbers.chosen_variant == "a,b"


def test_every_variant_at_max_holds_at_bounds() -> None:
    s = Scaler()
    actions = feed(s, [(0, target("a", max_replicas=1)), (0, snapshot("a", [0.9], at=0))])
    assert summary(actions)[-1] == ("a", 1, reasons.HOLD_AT_BOUNDS)


# ---------------------------------------------------------------- membership and state growth


def test_deleting_a_variant_re_evaluates_its_group_and_forgets_it() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40)), (0, target("b", cost=80, resolved=False))])
    feed(s, [(0, snapshot("a", [0.9], at=0))])
    actions = feed(s, [(1, TargetDeleted(namespace=NS, name="b", at=dt(1)))])
    assert actions[0] == Forget(namespace=NS, name="b")
    assert summary(actions)[0] == ("a", 2, reasons.SCALE_UP_SATURATED)


def test_the_invalidation_after_a_deletion_creates_no_state() -> None:
    s = Scaler()
    feed(s, [(0, target("a")), (1, TargetDeleted(namespace=NS, name="a", at=dt(1)))])
    assert feed(s, [(2, invalidation("a", at=2, reason="va_deleted", generation=2))]) == []
    assert feed(s, [(3, invalidation("ghost", at=3, generation=5))]) == []
    assert s._vas == {} and s._groups == {}


def test_snapshots_of_unknown_vas_are_bounded_and_adopted_by_their_target() -> None:
    from services.scaler import core

    s = Scaler()
    for i in range(core.MAX_ORPHANS + 50):
        s.handle(snapshot(f"v{i}", [0.1], at=0), 0)
    assert len(s._orphans) == core.MAX_ORPHANS
    last = f"v{core.MAX_ORPHANS + 49}"
    actions = feed(s, [(1, target(last))])
    assert summary(actions)[0][2] != reasons.HOLD_METRICS_UNAVAILABLE  # its snapshot was kept


def test_groups_are_per_namespace_and_model() -> None:
    s = Scaler()
    feed(s, [(0, target("a", model="m1")), (0, target("b", model="m2", resolved=False))])
    actions = feed(s, [(0, snapshot("a", [0.9], at=0, model="m1"))])
    assert summary(actions)[0] == ("a", 2, reasons.SCALE_UP_SATURATED)


def test_a_variant_moving_to_another_model_leaves_its_group() -> None:
    s = Scaler()
    feed(s, [(0, target("a")), (0, target("b", resolved=False)), (0, snapshot("a", [0.9], at=0))])
    actions = feed(s, [(1, target("b", model="other", resolved=False))])
    assert ("a", 2, reasons.SCALE_UP_SATURATED) in summary(actions)
    assert feed(s, [(2, TargetDeleted(namespace=NS, name="ghost", at=dt(2)))]) == []


# ---------------------------------------------------------------- scale to zero

STZ = ConfigSet(default=ScalingConfig(scale_to_zero=ScaleToZeroConfig(enabled=True, retention_seconds=600)))


def test_scale_to_zero_after_the_retention_window() -> None:
    s = Scaler(configs=STZ)
    feed(s, [(0, target("a", cost=40, min_replicas=0)), (0, target("b", cost=80, min_replicas=1))])
    events = []
    for t in range(0, 601, 30):
        events += [(t, snapshot("a", [0.0], at=t, rate=0.0)), (t, snapshot("b", [0.0], at=t, rate=0.0))]
    actions = feed(s, events)
    zero = [d for d in decisions(actions) if d.reason == reasons.SCALE_TO_ZERO]
    assert [(d.name, d.desired) for d in zero] == [("b", 1), ("a", 0)]  # b at once, a after its step
    assert zero[0].at == dt(600)
    assert [(a.name, a.replicas) for a in scales(actions)] == [("a", 0)]


def test_a_request_restarts_the_retention_window() -> None:
    s = Scaler(configs=STZ)
    feed(s, [(0, target("a", min_replicas=0))])
    events = [(t, snapshot("a", [0.0], at=t, rate=0.0 if t != 300 else 0.5)) for t in range(0, 901, 30)]
    actions = feed(s, events)
    assert scales(actions) == [] and s.last_decision(NS, "a").reason == reasons.HOLD_NO_TRIGGER  # type: ignore[union-attr]
    actions = feed(s, [(930, snapshot("a", [0.0], at=930, rate=0.0))])  # zero since 330: 600 s at 930
    assert summary(actions)[0] == ("a", 0, reasons.SCALE_TO_ZERO)


def test_at_zero_traffic_brings_the_cheapest_back() -> None:
    s = Scaler(configs=STZ)
    feed(s, [(0, target("a", cost=40, replicas=0, min_replicas=0)), (0, target("b", cost=80, replicas=0, min_replicas=0))])
    actions = feed(s, [(0, snapshot("a", [], at=0, rate=0.0)), (0, snapshot("b", [], at=0, rate=0.0))])
    assert summary(actions)[-2:] == [("a", 0, reasons.SCALE_TO_ZERO), ("b", 0, reasons.SCALE_TO_ZERO)]
    actions = feed(s, [(10, snapshot("b", [], at=10, rate=2.0))])
    assert summary(actions)[:2] == [("b", 0, reasons.SCALE_UP_FROM_ZERO), ("a", 1, reasons.SCALE_UP_FROM_ZERO)]


def test_disabled_scale_to_zero_keeps_one_on_the_cheapest_once_it_can_decide() -> None:
    s = Scaler()
    feed(s, [(0, target("a", cost=40, min_replicas=0)), (0, target("b", cost=80, min_replicas=0))])
    feed(s, [(0, snapshot("a", [0.1], at=0)), (0, snapshot("b", [0.1], at=0))])
    # Someone scales both Deployments to zero: the old snapshots describe the old generation, so the
    # group holds and resizes nothing ...
    a0 = target("a", cost=40, min_replicas=0, replicas=0, generation=2)
    b0 = target("b", cost=80, min_replicas=0, replicas=0, generation=2)
    actions = feed(s, [(5, a0), (5, b0)])
    assert scales(actions) == []
    assert {r for _, _, r in summary(actions)} == {reasons.HOLD_INVALIDATED}
    # ... until snapshots of the new generation arrive: then the floor brings the cheapest back.
    actions = feed(s, [(6, snapshot("a", [], at=6, generation=2)), (6, snapshot("b", [], at=6, generation=2))])
    assert [(a.name, a.replicas) for a in scales(actions)] == [("a", 1)]


def test_idle_is_not_enough_without_opt_in() -> None:
    s = Scaler()
    feed(s, [(0, target("a", min_replicas=0))])
    actions = feed(s, [(t, snapshot("a", [0.0], at=t, rate=0.0)) for t in range(0, 1300, 30)])
    assert scales(actions) == []


# ---------------------------------------------------------------- configuration is an event


def test_configuration_is_applied_or_refused_as_an_event() -> None:
    s = Scaler()
    feed(s, [(0, target("a", replicas=2)), (0, snapshot("a", [0.65, 0.72], at=0))])
    actions = feed(s, [(1, ConfigData({"default": "kvCacheThreshold: 0.70"}))])
    assert actions[0] == ConfigReport(applied=True, source="ConfigMap")
    # 0.72 is saturated now, the other's spare 0.05 is below the trigger: it takes effect at once.
    assert summary(actions)[0] == ("a", 3, reasons.SCALE_UP_SPARE_KV_LOW)
    refused = s.handle(ConfigData({"default": "kvCacheThreshold: 0"}), 2)
    assert isinstance(refused[0], ConfigReport) and not refused[0].applied
    assert "kvCacheThreshold must be in (0, 1]" in refused[0].errors[0]
    assert s.configs.default.kv_cache_threshold == 0.70  # the previous one stays in force


# ---------------------------------------------------------------- replay exactness


def test_decisions_carry_their_trigger_and_cursor() -> None:
    s = Scaler()
    s.handle(Started(targets=3, metrics=7, events=11), 0)
    s.handle(target("a", replicas=2), 0, seq=4)
    actions = s.handle(snapshot("a", [0.65, 0.72], at=1), 1, seq=8)
    (d,) = decisions(actions)
    assert d.trigger == "metrics.v1"
    assert d.cursor == Cursor(targets=4, metrics=8, events=0, start_targets=3, start_metrics=7, start_events=11)
    assert decisions(s.handle(Tick(), 100))[0].trigger == "tick"


def test_a_tick_that_decides_nothing_changes_nothing() -> None:
    """Ticks that produce no decision are not recorded, so they must leave no trace in the core:
    replaying a run without them gives the same decisions."""
    config = ConfigSet(default=ScalingConfig(scale_down_stabilization_seconds=30, stale_after_seconds=25))
    s = Scaler(configs=config)
    spec = {"a": 1, "b": 3}
    generation = {"a": 1, "b": 1}
    fed: list[tuple[float, Event, bool]] = []  # (now, event, produced a decision)
    live = []
    changed = {"a", "b"}  # the watcher publishes a Target when its Deployment changes
    for step in range(0, 1200):
        now = step * 0.5
        batch: list[Event] = []
        if step % 24 == 0 and not 300 <= now < 360:  # a snapshot every 12 s, but for a fetcher outage
            kv = 0.9 if 200 <= now < 260 or 500 <= now < 520 else 0.1
            batch += [snapshot(n, [kv if n == "a" else 0.12] * spec[n], at=now, generation=generation[n]) for n in "ab"]
        if step % 10 == 3:
            batch.append(Tick())
        for event in batch:
            actions = feed(s, [(now, event)])
            live += [(d.at.timestamp(), d.name, d.desired, d.reason) for d in decisions(actions)]
            fed.append((now, event, bool(decisions(actions))))
            for action in scales(actions):  # the Deployment follows, one generation later
                spec[action.name], generation[action.name] = action.replicas, generation[action.name] + 1
                changed.add(action.name)
        if step % 2 == 1:
            for n, cost in [(n, c) for n, c in (("a", 40), ("b", 80)) if n in changed]:
                changed.discard(n)
                t = target(n, cost=cost, replicas=spec[n], generation=generation[n], max_replicas=6)
                actions = feed(s, [(now, t)])
                live += [(d.at.timestamp(), d.name, d.desired, d.reason) for d in decisions(actions)]
                fed.append((now, t, bool(decisions(actions))))
    quiet = [1 for _, e, decided in fed if isinstance(e, Tick) and not decided]
    deciding = [1 for _, e, decided in fed if isinstance(e, Tick) and decided]
    assert quiet and deciding  # both kinds happened

    replay = Scaler(configs=config)
    replayed = []
    for now, event, decided in fed:
        if isinstance(event, Tick) and not decided:
            continue
        replayed += [(d.at.timestamp(), d.name, d.desired, d.reason) for d in decisions(feed(replay, [(now, event)]))]
    assert replayed == live
    reasons_seen = {r for *_, r in live}
    assert {reasons.SCALE_DOWN_SPARE_CAPACITY, reasons.HOLD_STALE_METRICS} <= reasons_seen


def test_same_events_same_actions() -> None:
    def run() -> list[object]:
        s = Scaler()
        events: list[tuple[float, Event]] = [(0, target("a", cost=40)), (0, target("b", cost=80, replicas=2))]
        for t in range(0, 400, 20):
            kv = 0.9 if 100 <= t < 140 else 0.1
            events += [(t, snapshot("a", [kv], at=t)), (t, snapshot("b", [0.15, 0.12], at=t)), (t, Tick())]
        return feed(s, events)  # type: ignore[return-value]

    assert run() == run()
