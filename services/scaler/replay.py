"""Replay recorded events through the scaler core and compare its decisions with expected ones.

File format (JSON Lines), one object per line, in time order::

    {"t": 15.0, "event": {"kind": "metrics.v1", ...}}      a wire message (shared.messages), or
    {"t": 20.0, "event": {"kind": "tick"}}                 a Tick
    {"t": 15.0, "expect": {"name": "a", "desired": 3, "reason": "scale_up_saturated"}}
    {"note": "free text"}                                  ignored; explains the scenario

``t`` is the time in float seconds passed to the core as ``now``. An ``expect`` line names a subset
of a Decision's fields (usually namespace, name, desired, reason); expectations list every decision
the events produce, in order, each with the ``t`` of the event that produced it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from services.scaler.actions import Event, Tick
from services.scaler.machine import Scaler
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

_EVENT_TYPES = (Target, TargetDeleted, MetricsSnapshot, MetricsDeleted, Invalidation)


class ReplayError(ValueError):
    """A replay line that cannot be read; names the line number."""


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    t: float | None = None
    event: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty when absent
    expect: dict[str, Any] | None = None
    note: str | None = None


_line_decoder = msgspec.json.Decoder(_Line)


@dataclass(frozen=True, slots=True)
class Expectation:
    t: float
    fields: dict[str, Any]
    line: int


@dataclass(frozen=True, slots=True)
class Script:
    events: list[tuple[float, Event]]
    expectations: list[Expectation]


def parse(lines: Iterable[str | bytes]) -> Script:
    events: list[tuple[float, Event]] = []
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
        events.append((line.t, _event(number, line.event)))
    return Script(events=events, expectations=expectations)


def _event(number: int, raw: msgspec.Raw) -> Event:
    try:
        kind = peek_kind(raw)
    except MessageError as exc:
        raise ReplayError(f"line {number}: {exc}") from None
    if kind == "tick":
        return Tick()
    try:
        message = any_decoder.decode(raw)
    except MessageError as exc:
        raise ReplayError(f"line {number}: {exc}") from None
    if not isinstance(message, _EVENT_TYPES):
        raise ReplayError(f"line {number}: {type(message).__name__} is not a scaler input")
    return message


def _configs(config: ConfigSet | ScalingConfig | None) -> ConfigSet:
    if config is None:
        return ConfigSet()
    if isinstance(config, ScalingConfig):
        return ConfigSet(default=config)
    return config


def run_replay(
    lines: Iterable[str | bytes],
    config: ConfigSet | ScalingConfig | None = None,
    *,
    mode: ScalerMode = "scale",
) -> list[Decision]:
    """Every Decision a fresh core emits for the events of ``lines``, in order."""
    return _run(parse(lines).events, config, mode)


def _run(events: list[tuple[float, Event]], config: ConfigSet | ScalingConfig | None, mode: ScalerMode) -> list[Decision]:
    scaler = Scaler(configs=_configs(config), mode=mode)
    produced: list[Decision] = []
    for now, event in events:
        produced.extend(a for a in scaler.handle(event, now) if isinstance(a, Decision))
    return produced


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


def check(
    lines: Iterable[str | bytes],
    config: ConfigSet | ScalingConfig | None = None,
    *,
    mode: ScalerMode = "scale",
) -> list[str]:
    """Differences between the decisions produced and those expected; empty when they agree."""
    script = parse(lines)
    produced = _run(script.events, config, mode)
    at = [d.at.timestamp() for d in produced]
    problems: list[str] = []
    for i in range(max(len(produced), len(script.expectations))):
        if i >= len(script.expectations):
            d = produced[i]
            problems.append(f"decision #{i} at t={at[i]:g} not expected: {d.name} desired {d.desired} {d.reason}")
            continue
        exp = script.expectations[i]
        if i >= len(produced):
            problems.append(f"decision #{i} (line {exp.line}, t={exp.t:g}) expected, not produced: {exp.fields}")
            continue
        wrong = _matches(produced[i], exp.fields)
        if abs(at[i] - exp.t) > 1e-6:
            wrong.insert(0, f"t: expected {exp.t:g}, got {at[i]:g}")
        if wrong:
            problems.append(f"decision #{i} (line {exp.line}, t={exp.t:g}): " + "; ".join(wrong))
    return problems
