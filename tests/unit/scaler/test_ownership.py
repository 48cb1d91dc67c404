"""Several scaler replicas (docs/design.md §11): a core decides only for the groups of the partitions its
own Ownership names; it follows the rest; on a take-over it restores the scale-down window from the
last decisions on the stream, or restarts it (which delays a scale-down, never speeds one up)."""

from __future__ import annotations

from services.scaler import reasons
from services.scaler.core import Scaler
from services.scaler.events import ScaleFailed, Tick
from shared.messages import Decision, Ownership
from shared.partitions import partition_of

from .builders import MODEL, NS, decisions, dt, feed, fetches, scales, snapshot, statuses, summary, target

PARTITIONS = 16
MINE = str(partition_of(NS, MODEL, PARTITIONS))
OTHER = str((int(MINE) + 1) % PARTITIONS)


def owner(replica: str, *owned: str, t: float = 0.0) -> Ownership:
    return Ownership(namespace="scaler", name=replica, at=dt(t), partitions=PARTITIONS, owned=tuple(owned))


def low(s: Scaler, t: float, replicas: int = 2) -> list[object]:
    return feed(s, [(t, snapshot("a", [0.2] * replicas, at=t))])  # type: ignore[return-value]


def test_a_replica_decides_nothing_until_it_holds_the_groups_partition() -> None:
    s = Scaler(replica="b-1")
    assert feed(s, [(0, target("a", replicas=1)), (1, snapshot("a", [0.95], at=1))]) == []
    assert feed(s, [(2, Tick())]) == []  # no decision, no status, no fetch nudge for a group it does not own
    assert feed(s, [(3, owner("someone-else", MINE))]) == []
    assert feed(s, [(4, owner("b-1", OTHER))]) == []
    actions = feed(s, [(5, owner("b-1", MINE, OTHER))])  # taken over: it decides at once
    assert [a.replicas for a in scales(actions)] == [2]
    decision = decisions(actions)[0]
    assert decision.replica == "b-1" and decision.trigger == "scale_applied" and decision.applied
    assert statuses(actions)


def test_a_replica_that_loses_the_partition_stops_at_once() -> None:
    s = Scaler(replica="a-1")
    feed(s, [(0, owner("a-1", MINE)), (0, target("a", replicas=1)), (1, snapshot("a", [0.5], at=1))])
    assert feed(s, [(2, owner("a-1"))]) == []
    assert feed(s, [(3, snapshot("a", [0.95], at=3)), (40, Tick())]) == []
    assert fetches(feed(s, [(100, Tick())])) == []


def test_a_step_in_flight_when_the_lease_goes_reports_its_outcome_and_nothing_more() -> None:
    s = Scaler(replica="a-1")
    feed(s, [(0, owner("a-1", MINE)), (0, target("a", replicas=1))])
    (step,) = scales(feed(s, [(1, snapshot("a", [0.95], at=1))], apply=False))
    feed(s, [(2, owner("a-1"))])
    actions = s.handle(ScaleFailed(NS, "a", step.replicas, "fenced", "lease lost"), 2.5)
    assert [(d.outcome, d.applied) for d in decisions(actions)] == [("fenced", False)]
    assert statuses(actions) == [] and scales(actions) == []


def _old_owner_decisions(until: float) -> list[Decision]:
    """What replica a-1 decided for a group at 2 replicas with low load, from t=0 to ``until``."""
    a = Scaler(replica="a-1")
    feed(a, [(0, owner("a-1", MINE)), (0, target("a", replicas=2))])
    out: list[Decision] = []
    for t in range(0, int(until) + 1, 10):
        out.extend(decisions(low(a, t)))  # type: ignore[arg-type]
    return out


def _standby(seen: list[Decision]) -> Scaler:
    b = Scaler(replica="b-1")
    feed(b, [(0, target("a", replicas=2))])
    for d in seen:
        b.handle(d, d.at.timestamp())
    return b


def test_a_take_over_restores_the_scale_down_window_from_the_last_decisions() -> None:
    seen = _old_owner_decisions(until=100)  # a-1 recommended 1 from t=0 on, held by its 120s window
    assert [(d.reason, d.numbers.recommended) for d in seen] == [(reasons.HOLD_STABILIZING, 1)]
    b = _standby(seen)
    low(b, 125)
    # a-1 dies; b-1 takes over at 130: the recommendation has stood since 0, a whole window
    actions = feed(b, [(130, owner("b-1", MINE))])
    assert [a.replicas for a in scales(actions)] == [1]
    assert summary(actions)[0] == ("a", 1, reasons.SCALE_DOWN_SPARE_CAPACITY)


def test_without_the_last_decisions_a_take_over_restarts_the_window() -> None:
    b = _standby([])
    low(b, 125)
    actions = feed(b, [(130, owner("b-1", MINE))])
    assert summary(actions) == [("a", 2, reasons.HOLD_STABILIZING)] and scales(actions) == []
    assert scales(low(b, 249)) == []  # type: ignore[arg-type]
    assert [a.replicas for a in scales(low(b, 250))] == [1]  # type: ignore[arg-type]


def test_a_restored_window_never_ends_sooner_than_the_old_owners() -> None:
    # a-1's last decision came at 100 (the load fell then): it would have scaled down at 220
    a = Scaler(replica="a-1")
    feed(a, [(0, owner("a-1", MINE)), (0, target("a", replicas=2)), (0, snapshot("a", [0.7, 0.7], at=0))])
    seen = decisions(feed(a, [(100, snapshot("a", [0.2, 0.2], at=100))]))
    assert [d.numbers.recommended for d in seen] == [1]
    b = _standby(seen)
    low(b, 125)
    assert scales(feed(b, [(130, owner("b-1", MINE))])) == []
    assert scales(low(b, 219)) == []  # type: ignore[arg-type]
    assert [a.replicas for a in scales(low(b, 220))] == [1]  # type: ignore[arg-type]


def test_a_replica_restores_only_from_decisions_for_every_variant_of_the_group() -> None:
    seen = _old_owner_decisions(until=0)
    b = Scaler(replica="b-1")
    feed(b, [(0, target("a", replicas=2)), (0, target("b", replicas=1, cost=80))])
    for d in seen:  # only a's: b (the other variant) has none on the stream
        b.handle(d, 0)
    feed(b, [(125, snapshot("b", [0.2], at=125))])
    low(b, 125)
    assert scales(feed(b, [(130, owner("b-1", MINE))])) == []
