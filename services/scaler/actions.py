"""What the scaler core asks its shell to do. The core decides everything, including what a VA's
status says; the shell performs the I/O and reports outcomes back as events (``events.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from shared.messages import Decision

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True, slots=True)
class Condition:
    """A VA condition as the core decides it (the status adds its generation and transition time)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


# ------------------------------------------------------------------ the VA status subresource (WVA's shape)


class StatusCondition(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    type: str
    status: str
    reason: str
    message: str
    observed_generation: int
    last_transition_time: str


class OptimizedAlloc(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    accelerator: str
    num_replicas: int
    last_run_time: str


class Actuation(msgspec.Struct, frozen=True, kw_only=True):
    applied: bool


class VAStatus(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    desired_optimized_alloc: OptimizedAlloc | None = None
    actuation: Actuation | None = None
    conditions: tuple[StatusCondition, ...] = ()


# ------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleAction:
    """Set the scale target's replicas. ``expected_generation`` is the Deployment generation the
    decision was made against (the shell refuses if it moved on); ``min_replicas``/``max_replicas``
    are the bounds the core used, which the shell confirms against the VA in the Kubernetes API."""

    namespace: str
    name: str  # the VA
    deployment: str
    replicas: int
    expected_generation: int
    min_replicas: int
    max_replicas: int | None
    model_id: str = ""  # the group's: with several replicas the shell checks its lease on its partition


@dataclass(frozen=True, slots=True)
class FetchAction:
    """Nudge the fetcher (``wva.fetch.<ns>.<va>``, fresh) for a snapshot that is missing or behind; the
    answer comes back on the metrics stream like every snapshot, never through this request."""

    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class StatusAction:
    """Write the VA's status subresource: the whole of it, as the core decided it."""

    namespace: str
    name: str
    status: VAStatus
    model_id: str = ""  # the group's, for the same check


@dataclass(frozen=True, slots=True)
class ConfigReport:
    """The outcome of a ConfigData event: applied, or refused with the previous one kept in force."""

    applied: bool
    source: str
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InputWarning:
    """An input the core used with a correction (e.g. a timestamp from the future, clamped)."""

    reason: str  # a short code for a metric label, e.g. "clock_skew"
    namespace: str
    name: str
    detail: str


@dataclass(frozen=True, slots=True)
class Forget:
    """A VA is gone: the shell drops what it keeps for it (gauges, pending status writes)."""

    namespace: str
    name: str


Action = Decision | ScaleAction | FetchAction | StatusAction | ConfigReport | InputWarning | Forget
