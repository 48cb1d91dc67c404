"""The run's verdict and report from a timeline (pure): expectations, replica-minutes, the HTML."""

from __future__ import annotations

from services.sandbox import expectations, observe, report, scenario


def _timeline(specs: list[int]) -> observe.Timeline:
    info = observe.VariantInfo(
        name="a",
        va="a",
        namespace="llm",
        model_id="m",
        cost=40.0,
        min_replicas=1,
        max_replicas=4,
        initial_replicas=1,
    )
    timeline = observe.Timeline(scenario="t", duration=len(specs), variants=[info], models=["m"])
    for t, spec in enumerate(specs):
        point = observe.VariantPoint(
            spec=spec, ready=spec, desired=spec, kv=0.5, waiting=0.0, ttft=0.05, served_rps=1.0
        )
        timeline.samples.append(observe.Sample(t=float(t), load={"m": 2.0}, variants={"a": point}))
    timeline.decisions.append(
        observe.DecisionMark(
            t=2.0, variant="a", current=1, desired=3, reason="scale_up_saturated", applied=True
        )
    )
    return timeline


def test_each_bound_is_checked_against_peak_or_final_spec_replicas() -> None:
    timeline = _timeline([1, 1, 3, 3, 2])
    outcomes = expectations.check(
        timeline,
        [
            scenario.Expectation(variant="a", min_replicas_reached=3, final_replicas_at_most=2),
            scenario.Expectation(variant="a", max_replicas_reached_at_most=2, final_replicas_at_least=3),
        ],
    )
    assert [(o.met, o.text) for o in outcomes] == [
        (True, "a reaches >= 3 replicas: max 3"),
        (True, "a ends with <= 2 replicas: final 2"),
        (False, "a never exceeds 2 replicas: max 3"),
        (False, "a ends with >= 3 replicas: final 2"),
    ]


def test_scale_ups_are_counted_as_increases_between_samples() -> None:
    # 1 -> 3 is one step of two replicas; 3 -> 2 -> 4 is another increase.
    outcomes = expectations.check(
        _timeline([1, 3, 3, 2, 4]),
        [scenario.Expectation(variant="a", scale_ups_at_most=1), scenario.Expectation(variant="a", scale_ups_at_most=2)],
    )
    assert [(o.met, o.text) for o in outcomes] == [
        (False, "a is scaled up at most 1 times: ups 2"),
        (True, "a is scaled up at most 2 times: ups 2"),
    ]
    never = expectations.check(_timeline([2, 2, 1, 1]), [scenario.Expectation(variant="a", scale_ups_at_most=0)])
    assert [(o.met, o.text) for o in never] == [(True, "a is scaled up at most 0 times: ups 0")]


def test_summary_counts_replica_minutes_and_first_scale_up() -> None:
    timeline = _timeline([1] * 30 + [3] * 31)  # 30 s at 1 replica, 30 s at 3 (the last sample ends it)
    summary = report.summarize(timeline, collector="scrape", outcomes=[], crashed=["scaler (exit 1)"])
    (a,) = summary.variants
    assert a.replica_minutes == 2.0
    assert a.cost_minutes == 80.0
    assert (a.max_replicas, a.final_replicas, a.scale_ups, a.scale_downs) == (3, 3, 1, 0)
    assert summary.first_scale_up == 2.0
    assert not summary.ok  # a crashed service fails the run
    assert "  [CRASHED] scaler (exit 1)" in report.text_lines(summary)


def test_html_is_self_contained_with_marked_decisions() -> None:
    timeline = _timeline([1, 1, 3, 3])
    summary = report.summarize(timeline, collector="prometheus", outcomes=[], crashed=[])
    html = report.render_html(summary, timeline)
    assert html.count("<svg") == 5
    assert "<script" not in html and "href=" not in html and "src=" not in html
    assert "2.0s a 1-&gt;3 scale_up_saturated" in html  # the decision's mark, with its reason on hover
