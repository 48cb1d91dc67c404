"""A recording (``wva record``) turned back into the exact inputs the live scaler core had, in order.

Every recorded decision carries its ``cursor`` (the stream sequences the core had consumed, and where
it began following) and its ``trigger``, so the replay feeds, before each evaluation, exactly the
messages the live core had read by then — for targets and metrics only the last value per subject up to
where it began, as its followers did — then the trigger itself at the decision's own instant: the
message, a ``Tick``, the actuation outcome the decision reports, or the configuration. A step's
decision is published with its outcome; its ``chosen`` evaluation (instant, trigger, cursor) is
replayed where the live core made it, before the outcome. Messages that produced no decision are fed
at the time NATS stored them; ticks that produced none changed nothing.

A scaler that restarted during the recording began following at other sequences: each run is replayed
by a fresh core, as it ran live.

Several replicas (docs/design.md §11): each decision names the replica that made it, and each replica's
run is replayed by a core of that identity, fed what that replica's core read: besides targets, metrics
and invalidations, every decision on the stream (the last of each VA up to where it began) and its own
``Ownership`` messages, which say when it decided for which groups.

Lines that are not from a recording (no ``cursor``: hand-written scripts, older recordings) keep their
order and times, and decisions become expectations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from services.scaler.events import ConfigData, Event, ScaleApplied, ScaleFailed, Tick
from services.scaler.replay import Expectation, ReplayError, Step
from shared.messages import (
    Cursor,
    Decision,
    Invalidation,
    MessageError,
    MetricsDeleted,
    MetricsSnapshot,
    Ownership,
    Target,
    TargetDeleted,
    any_decoder,
)

STREAMS: Final = ("targets", "metrics", "events")
_LAST_VALUE: Final = ("targets", "metrics")
_TRIGGERS: Final = {"target.v1": "targets", "target_deleted.v1": "targets", "metrics.v1": "metrics",
                    "metrics_deleted.v1": "metrics", "invalidation.v1": "events", "decision.v1": "events",
                    "ownership.v1": "events"}  # fmt: skip
COMPARED: Final = ("namespace", "name", "current", "desired", "reason", "applied", "outcome", "trigger")


@dataclass(frozen=True, slots=True)
class Entry:
    """One recorded message."""

    t: float
    subject: str
    stream: str  # "targets" | "metrics" | "events" | "" (unknown: an older recording)
    seq: int
    message: Any  # a decoded wire message


@dataclass(frozen=True, slots=True)
class Run:
    """One live scaler's inputs and decisions: what a fresh core replays."""

    steps: list[Step]
    expectations: list[Expectation]
    replica: str = ""  # the scaler replica whose run it is ("" without leases)


def read(lines: Iterable[str]) -> list[Entry]:
    entries: list[Entry] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = msgspec.json.decode(raw)
            message = any_decoder.decode(msgspec.json.encode(record["event"]))
            entries.append(
                Entry(
                    t=float(record["t"]),
                    subject=str(record.get("subject", "")),
                    stream=str(record.get("stream", "")),
                    seq=int(record.get("seq", 0)),
                    message=message,
                )
            )
        except (msgspec.MsgspecError, MessageError, KeyError, TypeError, ValueError) as exc:
            raise ReplayError(f"line {number}: not a recording line: {exc}") from None
    return entries


def runs(entries: Sequence[Entry], config: Mapping[str, str] | None) -> list[Run]:
    """The recording's scaler runs, each as steps and the decisions they must reproduce."""
    decisions = sorted((e for e in entries if isinstance(e.message, Decision)), key=lambda e: e.seq)
    if not decisions or any(e.stream not in STREAMS or e.seq <= 0 for e in entries):
        raise ReplayError("the recording has no stream positions (recorded before wva kept them)")
    by_start: dict[tuple[str, int, int, int], list[Entry]] = {}
    for d in decisions:
        c: Cursor = d.message.cursor
        by_start.setdefault((d.message.replica, c.start_targets, c.start_metrics, c.start_events), []).append(d)
    return [_run(entries, group, start[1:], config, replica=start[0]) for start, group in by_start.items()]


@dataclass(frozen=True, slots=True)
class _Point:
    """One evaluation to reproduce: the live core's (at, trigger, cursor), the decision that carried
    it (for the outcome it reports), and the decisions it must produce (none for a step's ``chosen``
    evaluation, whose decision is published with its outcome)."""

    at: float
    trigger: str
    cursor: Cursor
    decision: Decision
    expected: tuple[Decision, ...]


def _points(decisions: Sequence[Entry]) -> list[_Point]:
    """Every evaluation the recording shows, in time order: each group of decisions published by one
    evaluation, and before a step's outcome the evaluation that chose the step (unless it also
    published decisions of its own, and so is already a group)."""
    groups: list[list[Decision]] = []
    for entry in decisions:
        d: Decision = entry.message
        if groups and _same_evaluation(groups[-1][0], d):
            groups[-1].append(d)
        else:
            groups.append([d])
    seen = {(g[0].at, g[0].trigger, g[0].cursor) for g in groups}
    points: list[_Point] = []
    for group in groups:
        first = group[0]
        chosen = next((d.chosen for d in group if d.chosen is not None), None)
        if chosen is not None and (chosen.at, chosen.trigger, chosen.cursor) not in seen:
            seen.add((chosen.at, chosen.trigger, chosen.cursor))
            points.append(_Point(chosen.at.timestamp(), chosen.trigger, chosen.cursor, first, ()))
        points.append(_Point(first.at.timestamp(), first.trigger, first.cursor, first, tuple(group)))
    # Published in the order the evaluations ran, except that a step's decision waits for its outcome:
    # the stable sort puts its chosen evaluation back where it ran.
    return sorted(points, key=lambda p: p.at)


def _run(
    entries: Sequence[Entry],
    decisions: Sequence[Entry],
    start: tuple[int, int, int],
    config: Mapping[str, str] | None,
    *,
    replica: str,
) -> Run:
    begin = dict(zip(STREAMS, start, strict=True))
    queues = {stream: _consumed(entries, stream, begin[stream], replica) for stream in STREAMS}
    fed = dict.fromkeys(STREAMS, 0)  # index into each queue
    steps: list[Step] = []
    expectations: list[Expectation] = []
    last = float("-inf")
    for point in _points(decisions):
        at = point.at
        cursor = msgspec.structs.asdict(point.cursor)
        trigger_stream = _TRIGGERS.get(point.trigger)
        due: list[Entry] = []
        for stream in STREAMS:
            queue = queues[stream]
            while fed[stream] < len(queue) and queue[fed[stream]].seq <= cursor[stream]:
                due.append(queue[fed[stream]])
                fed[stream] += 1
        trigger_entry = None
        if trigger_stream is not None:
            trigger_entry = next((e for e in due if e.stream == trigger_stream and e.seq == cursor[trigger_stream]), None)
            if trigger_entry is not None:
                due.remove(trigger_entry)
        for entry in sorted(due, key=lambda e: (e.t, STREAMS.index(e.stream), e.seq)):
            last = min(max(last, entry.t), at)
            steps.append(Step(t=last, event=entry.message, seq=entry.seq))
        event = _trigger_event(point, trigger_entry, config)
        if event is not None:
            steps.append(Step(t=at, event=event, seq=trigger_entry.seq if trigger_entry is not None else None))
        last = max(last, at)
        for d in point.expected:
            expectations.append(Expectation(t=at, fields={k: getattr(d, k) for k in COMPARED}, line=0))
    rest = [e for stream in STREAMS for e in queues[stream][fed[stream]:]]
    for entry in sorted(rest, key=lambda e: (e.t, STREAMS.index(e.stream), e.seq)):
        last = max(last, entry.t)
        steps.append(Step(t=last, event=entry.message, seq=entry.seq))
    return Run(steps=steps, expectations=expectations, replica=replica)


def _consumed(entries: Sequence[Entry], stream: str, begin: int, replica: str) -> list[Entry]:
    """What the live core read of ``stream``, in order: beyond ``begin`` every message; up to it only
    the last value per subject (targets, metrics; with leases, decisions) or nothing (the events)."""
    mine = sorted((e for e in entries if e.stream == stream and _scaler_input(e.message, replica)), key=lambda e: e.seq)
    if stream not in _LAST_VALUE and not replica:
        return [e for e in mine if e.seq > begin]
    last: dict[str, Entry] = {}
    for e in mine:
        if e.seq <= begin and (stream in _LAST_VALUE or isinstance(e.message, Decision)):
            last[e.subject] = e
    return sorted(last.values(), key=lambda e: e.seq) + [e for e in mine if e.seq > begin]


def _scaler_input(message: object, replica: str) -> bool:
    if isinstance(message, Decision):
        return bool(replica)
    if isinstance(message, Ownership):
        return bool(replica) and message.name == replica
    return isinstance(message, Target | TargetDeleted | MetricsSnapshot | MetricsDeleted | Invalidation)


def _same_evaluation(a: Decision, b: Decision) -> bool:
    return a.at == b.at and a.trigger == b.trigger and a.cursor == b.cursor


def _trigger_event(point: _Point, entry: Entry | None, config: Mapping[str, str] | None) -> Event | None:
    if entry is not None:
        event: Event = entry.message
        return event
    if point.trigger == "tick":
        return Tick()
    if point.trigger == "config":
        return ConfigData(config, source="replay")
    if not point.expected:
        # A step chosen right after another step's outcome: that outcome is its own point, fed already.
        return None
    decision = point.decision
    if point.trigger == "scale_applied":
        return ScaleApplied(
            decision.namespace, decision.name, decision.desired, "no_op" if decision.outcome == "no_op" else "applied"
        )
    if point.trigger == "scale_failed":
        detail = decision.detail.rpartition(f"; not applied ({decision.outcome}): ")[2]
        return ScaleFailed(decision.namespace, decision.name, decision.desired, decision.outcome, detail)  # type: ignore[arg-type]
    return None  # a message trigger whose message is not in the recording
