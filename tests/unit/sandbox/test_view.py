"""The headless view: a line per replica change and per change of a model group's hold reason, not
a line per decision (pure: decisions are fed to the observer as the NATS side would)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from services.sandbox import observe, scenario, view
from shared import messages as m

SCENARIO = """
name: view
duration: 60
namespaces: [llm]
models:
  - id: org/model-7b
    namespace: llm
    load: {kind: constant, rps: 1}
    variants:
      - {name: cheap, cost: "40", accelerator: L40S, max_replicas: 4, initial_replicas: 1}
      - {name: dear, cost: "80", accelerator: H100, max_replicas: 2, initial_replicas: 2}
"""
AT = datetime(2026, 1, 1, tzinfo=UTC)


def _decide(
    observer: observe.Observer,
    t: float,
    va: str,
    current: int,
    desired: int,
    reason: str,
    *,
    applied: bool = False,
    outcome: str = "",
) -> None:
    decision = m.Decision(
        namespace="llm", name=va, at=AT, current=current, desired=desired, reason=reason, applied=applied,
        outcome=outcome,
    )  # fmt: skip
    observer.handle(f"wva.decisions.llm.{va}", m.encode(decision), t)


def _hold(observer: observe.Observer, t: float, reason: str) -> None:
    _decide(observer, t, "cheap", 1, 1, reason)
    _decide(observer, t, "dear", 2, 2, reason)


def test_prints_steps_and_hold_changes_once_per_group() -> None:
    observer = observe.Observer(scenario.parse_scenario(SCENARIO, source="test"))
    out = io.StringIO()
    with view.LineView(out) as shown:
        _hold(observer, 1.0, "hold_metrics_unavailable")
        shown.refresh(observer, 1.0)
        _hold(observer, 2.0, "hold_no_trigger")
        shown.refresh(observer, 2.0)
        shown.refresh(observer, 3.0)
        _hold(observer, 4.0, "hold_stabilizing")
        _hold(observer, 5.0, "hold_stabilizing")
        shown.refresh(observer, 5.0)
        shown.refresh(observer, 6.0)
        # One step and the holds that follow every step, all within one refresh.
        _decide(observer, 7.0, "dear", 2, 1, "scale_down_spare_capacity", applied=True)
        _decide(observer, 7.0, "cheap", 1, 1, "scale_down_spare_capacity")
        _decide(observer, 7.0, "dear", 2, 1, "hold_transition")  # desired is the pending step's
        _hold(observer, 7.1, "hold_invalidated")
        _hold(observer, 7.2, "hold_stabilizing")
        shown.refresh(observer, 7.5)
        _hold(observer, 8.0, "hold_stabilizing")
        shown.refresh(observer, 8.5)
        # A step the scaler wanted but could not apply is shown too.
        _decide(observer, 9.0, "cheap", 1, 2, "scale_up_saturated", applied=False)
        shown.refresh(observer, 9.5)
        _hold(observer, 10.0, "hold_at_bounds")
        shown.refresh(observer, 10.5)
    lines = out.getvalue().splitlines()
    assert [line.split()[3] if "->" not in line else line.split()[6] for line in lines] == [
        "hold_metrics_unavailable",
        "hold_no_trigger",
        "hold_stabilizing",
        "scale_down_spare_capacity",
        "hold_stabilizing",
        "scale_up_saturated",
        "hold_at_bounds",
    ], lines
    assert lines[0].startswith("t=   1.0s llm/model-7b")
    assert "dear                    2 -> 1  scale_down_spare_capacity (applied)" in lines[3]
    assert "(not applied)" in lines[5]
    assert len(observer.timeline.decisions) == 20  # the rest are counted, not printed


def test_a_step_counts_once_and_a_paced_stage_is_a_step() -> None:
    # As the scaler publishes them: the step once, with its outcome; until the Deployment shows it,
    # the decisions that follow carry its count (applied, no outcome, a hold's reason). A stage of a
    # paced scale-down (6 -> 5 while 1 is still stabilizing) is a change with the reason scale_down_paced.
    observer = observe.Observer(scenario.parse_scenario(SCENARIO.replace("max_replicas: 4", "max_replicas: 8"), source="t"))
    out = io.StringIO()
    with view.LineView(out) as shown:
        _decide(observer, 1.0, "cheap", 1, 2, "scale_up_required_capacity", applied=True, outcome="applied")
        _decide(observer, 1.1, "cheap", 1, 2, "hold_no_trigger", applied=True)
        shown.refresh(observer, 1.5)
        _decide(observer, 5.0, "cheap", 6, 5, "scale_down_paced", applied=True, outcome="applied")
        _decide(observer, 5.1, "cheap", 5, 5, "hold_stabilizing")
        shown.refresh(observer, 5.5)
        _decide(observer, 9.0, "cheap", 5, 6, "scale_up_required_capacity", applied=True, outcome="target_moved")
        shown.refresh(observer, 9.5)
    lines = out.getvalue().splitlines()
    assert [line.split("s ", 1)[1].split()[:4] for line in lines if " -> " in line] == [
        ["cheap", "1", "->", "2"], ["cheap", "6", "->", "5"], ["cheap", "5", "->", "6"],
    ]  # fmt: skip
    assert "scale_down_paced (applied)" in lines[2] and "(target_moved)" in lines[-1]
    marks = observer.timeline.decisions
    assert [(d.current, d.desired) for d in marks if d.is_scaling] == [(1, 2), (6, 5)]


def test_a_step_of_another_variant_is_not_shown_as_a_hold_when_it_comes_first() -> None:
    # The scaler publishes the group's decision for every VA; the one of the VA that does not move
    # (current == desired, the step's reason) may reach a refresh before the step itself, published
    # once actuated: it is not a hold of the group.
    observer = observe.Observer(scenario.parse_scenario(SCENARIO, source="t"))
    out = io.StringIO()
    with view.LineView(out) as shown:
        _decide(observer, 1.0, "cheap", 1, 1, "scale_down_spare_capacity")
        shown.refresh(observer, 1.0)
        _decide(observer, 1.1, "dear", 2, 1, "scale_down_spare_capacity", applied=True, outcome="applied")
        shown.refresh(observer, 2.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "dear" in lines[0] and "2 -> 1" in lines[0], lines


def test_with_replicas_both_views_say_who_holds_what() -> None:
    from datetime import timedelta

    observer = observe.Observer(scenario.parse_scenario(SCENARIO, source="test"))

    def owns(t: float, replica: str, owned: tuple[str, ...], *, service: str = "scaler", later: float = 0.0) -> None:
        said = m.Ownership(namespace=service, name=replica, at=AT + timedelta(seconds=later), partitions=16, owned=owned)
        observer.handle(f"wva.owners.{service}.{replica}", m.encode(said), t)

    owns(0.5, "scaler-1a2b3c", tuple(str(p) for p in range(16)), later=1)
    owns(0.5, "scaler-1a2b3c", (), later=0)  # an older word read late (the stored one): ignored
    owns(0.6, "watcher-2-4d5e6f", ("watcher",), service="watcher", later=1)
    owns(3.0, "scaler-1a2b3c", tuple(str(p) for p in range(8)), later=2)
    owns(3.1, "scaler-2-abcdef", tuple(str(p) for p in range(8, 16)), later=2)
    decision = m.Decision(namespace="llm", name="cheap", at=AT, current=1, desired=2, reason="scale_up_saturated",
                          applied=True, replica="scaler-2-abcdef")
    observer.handle("wva.decisions.llm.cheap", m.encode(decision), 4.0)
    out = io.StringIO()
    with view.LineView(out) as lines:
        lines.refresh(observer, 5.0)
    printed = out.getvalue().splitlines()
    assert [line.split()[3:] for line in printed if "owners" in line] == [
        ["scaler-1a2b3c", "(scaler)", "holds", "16:", ",".join(str(p) for p in range(16))],
        ["watcher-2-4d5e6f", "(watcher)", "holds", "1:", "watcher"],
        ["scaler-1a2b3c", "(scaler)", "holds", "8:", "0,1,2,3,4,5,6,7"],
        ["scaler-2-abcdef", "(scaler)", "holds", "8:", "8,9,10,11,12,13,14,15"],
    ]
    assert view.owners_text(observer).splitlines() == [
        "scaler   scaler-1a2b3c 8   scaler-2-abcdef 8",
        "watcher  watcher-2-4d5e6f watcher",
    ]
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(view.render(observer, 5.0))
    text = console.export_text()
    assert "partitions held" in text and "scale_up_saturated (scaler-2-abcdef)" in text
