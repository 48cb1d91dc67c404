"""Replay events through the scaler core and compare its decisions with expected ones.

File format (JSON Lines), one object per line, in time order::

    {"t": 15.0, "event": {"kind": "metrics.v1", ...}}      a wire message (shared.messages), or
    {"t": 20.0, "event": {"kind": "tick"}}                 a Tick
    {"t": 20.1, "event": {"kind": "scale_applied", "namespace": "llm", "name": "a", "replicas": 3}}
    {"t": 20.1, "event": {"kind": "scale_failed", "namespace": "llm", "name": "a", "replicas": 3,
                          "outcome": "failed", "detail": "HTTP 500"}}
    {"t": 15.0, "expect": {"name": "a", "desired": 3, "reason": "scale_up_saturated"}}
    {"note": "free text"}                                  ignored; explains the scenario

``t`` is the time in float seconds passed to the core as ``now``. A line may carry ``"seq"``, the
message's stream sequence (recordings do; see ``recording.py``). An ``expect`` line names a subset of
a Decision's fields; expectations list every decision the events produce, in order, each with the ``t``
of the event that produced it. A ``ScaleAction`` whose outcome no later line gives is applied at once,
as a shell whose PATCH succeeds would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from services.scaler.actions import Action, ScaleAction
from services.scaler.core import Scaler
from services.scaler.events import Event, ScaleApplied, ScaleFailed, Tick
from services.scaler.scaling_config import ConfigSet, ScalingConfig
from shared.messages import (
    Decision,
    Invalidation,
    MessageError,
    MetricsDeleted,
    MetricsSnapshot,
    ScalerMode,
    Target,
    TargetDeleted,
    any_decoder,
    peek_kind,
)

_WIRE_EVENTS = (Target, TargetDeleted, MetricsSnapshot, MetricsDeleted, Invalidation)


class ReplayError(ValueError):
    """A replay line that cannot be read; names the line number."""


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    t: float | None = None
    event: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty when absent
    expect: dict[str, Any] | None = None
    note: str | None = None
    seq: int | None = None


class _Applied(msgspec.Struct, forbid_unknown_fields=True, tag="scale_applied", tag_field="kind"):
    namespace: str
    name: str
    replicas: int
    outcome: Literal["applied", "no_op"] = "applied"


class _Failed(msgspec.Struct, forbid_unknown_fields=True, tag="scale_failed", tag_field="kind"):
    namespace: str
    name: str
    replicas: int
    outcome: Literal["failed", "target_moved", "not_found", "refused", "fenced"] = "failed"
    detail: str = ""


_line_decoder = msgspec.json.Decoder(_Line)
_outcome_decoder = msgspec.json.Decoder(_Applied | _Failed)


@dataclass(frozen=True, slots=True)
class Expectation:
    t: float
    fields: dict[str, Any]
    line: int


@dataclass(frozen=True, slots=True)
class Step:
    t: float
    event: Event
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Script:
    steps: list[Step]
    expectations: list[Expectation]


def parse(lines: Iterable[str | bytes]) -> Script:
    steps: list[Step] = []
    expectations: list[Expectation] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            line = _line_decoder.decode(text)
        except msgspec.MsgspecError as exc:
            raise ReplayError(f"line {number}: {exc}") from None
        has_event = len(line.event) > 0
        if line.note is not None and not has_event and line.expect is None:
            continue
        if line.t is None or has_event == (line.expect is not None):
            raise ReplayError(f"line {number}: needs 't' and exactly one of 'event' or 'expect'")
        if line.expect is not None:
            expectations.append(Expectation(t=line.t, fields=line.expect, line=number))
            continue
        steps.append(Step(t=line.t, event=_event(number, line.event), seq=line.seq))
    return Script(steps=steps, expectations=expectations)


def _event(number: int, raw: msgspec.Raw) -> Event:
    try:
        kind = peek_kind(raw)
    except MessageError as exc:
        raise ReplayError(f"line {number}: {exc}") from None
    if kind == "tick":
        return Tick()
    if kind in ("scale_applied", "scale_failed"):
        try:
            outcome = _outcome_decoder.decode(raw)
        except msgspec.MsgspecError as exc:
            raise ReplayError(f"line {number}: {exc}") from None
        if isinstance(outcome, _Applied):
            return ScaleApplied(outcome.namespace, outcome.name, outcome.replicas, outcome.outcome)
        return ScaleFailed(outcome.namespace, outcome.name, outcome.replicas, outcome.outcome, outcome.detail)
    try:
        message = any_decoder.decode(raw)
    except MessageError as exc:
        raise ReplayError(f"line {number}: {exc}") from None
    if not isinstance(message, _WIRE_EVENTS):
        raise ReplayError(f"line {number}: {type(message).__name__} is not a scaler input")
    return message


def configs(config: ConfigSet | ScalingConfig | None) -> ConfigSet:
    if config is None:
        return ConfigSet()
    if isinstance(config, ScalingConfig):
        return ConfigSet(default=config)
    return config


def run(
    steps: Sequence[Step],
    config: ConfigSet | ScalingConfig | None = None,
    *,
    mode: ScalerMode = "scale",
    replica: str = "",
) -> list[Decision]:
    """Every Decision a fresh core (of scaler replica ``replica``, if any) emits for ``steps``, in order."""
    scaler = Scaler(configs=configs(config), mode=mode, replica=replica)
    scheduled: dict[tuple[str, str, int], int] = {}  # outcomes still to come, by (namespace, VA, replicas)
    for step in steps:
        if isinstance(step.event, ScaleApplied | ScaleFailed):
            key = (step.event.namespace, step.event.name, step.event.replicas)
            scheduled[key] = scheduled.get(key, 0) + 1
    produced: list[Decision] = []
    for step in steps:
        if isinstance(step.event, ScaleApplied | ScaleFailed):
            key = (step.event.namespace, step.event.name, step.event.replicas)
            scheduled[key] -= 1
        actions = scaler.handle(step.event, step.t, seq=step.seq)
        while actions:
            produced.extend(a for a in actions if isinstance(a, Decision))
            actions = _apply_unscheduled(scaler, actions, scheduled, step.t)
    return produced


def _apply_unscheduled(
    scaler: Scaler, actions: Sequence[Action], scheduled: dict[tuple[str, str, int], int], now: float
) -> list[Action]:
    """Apply at once every ScaleAction whose outcome is not among the steps to come."""
    more: list[Action] = []
    for action in actions:
        if isinstance(action, ScaleAction) and scheduled.get((action.namespace, action.name, action.replicas), 0) <= 0:
            more.extend(scaler.handle(ScaleApplied(action.namespace, action.name, action.replicas), now))
    return more


def run_replay(
    lines: Iterable[str | bytes],
    config: ConfigSet | ScalingConfig | None = None,
    *,
    mode: ScalerMode = "scale",
) -> list[Decision]:
    """Every Decision a fresh core emits for the events of ``lines``, in order."""
    return run(parse(lines).steps, config, mode=mode)


def _matches(decision: Decision, fields: dict[str, Any]) -> list[str]:
    got = msgspec.to_builtins(decision)
    wrong = []
    for key, want in fields.items():
        have = got.get(key, "<no such field>")
        if isinstance(want, dict) and isinstance(have, dict):
            have = {k: have.get(k) for k in want}
        if have != want:
            wrong.append(f"{key}: expected {want!r}, got {have!r}")
    return wrong


def compare(produced: Sequence[Decision], expectations: Sequence[Expectation]) -> list[str]:
    """Differences between decisions and expectations, in order; empty when they agree."""
    at = [d.at.timestamp() for d in produced]
    problems: list[str] = []
    for i in range(max(len(produced), len(expectations))):
        if i >= len(expectations):
            d = produced[i]
            problems.append(f"decision #{i} at t={at[i]:g} not expected: {d.name} desired {d.desired} {d.reason}")
            continue
        exp = expectations[i]
        if i >= len(produced):
            problems.append(f"decision #{i} (line {exp.line}, t={exp.t:g}) expected, not produced: {exp.fields}")
            continue
        wrong = _matches(produced[i], exp.fields)
        if abs(at[i] - exp.t) > 1e-6:
            wrong.insert(0, f"t: expected {exp.t:g}, got {at[i]:g}")
        if wrong:
            problems.append(f"decision #{i} (line {exp.line}, t={exp.t:g}): " + "; ".join(wrong))
    return problems


def check(
    lines: Iterable[str | bytes],
    config: ConfigSet | ScalingConfig | None = None,
    *,
    mode: ScalerMode = "scale",
) -> list[str]:
    """Differences between the decisions produced and those expected; empty when they agree."""
    script = parse(lines)
    return compare(run(script.steps, config, mode=mode), script.expectations)
