"""What goes into the scaler core besides wire messages (``Tick``) and what comes out of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.messages import Decision, Invalidation, MetricsDeleted, MetricsSnapshot, Target, TargetDeleted


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes: re-evaluate every group (staleness, stabilization, scale-to-zero windows)."""


Event = Target | TargetDeleted | MetricsSnapshot | MetricsDeleted | Invalidation | Tick


@dataclass(frozen=True, slots=True)
class ScaleAction:
    """Set the scale target's replicas. ``expected_generation`` is the Deployment generation the
    decision was made against; the shell may refuse to act if the Deployment moved on since."""

    namespace: str
    name: str  # the VA
    deployment: str
    replicas: int
    expected_generation: int


@dataclass(frozen=True, slots=True)
class FetchAction:
    """Ask the fetcher for a fresh snapshot of this VA (``wva.fetch.<ns>.<va>``, fresh=True)."""

    namespace: str
    name: str


ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class StatusAction:
    """The VA's conditions changed: write them to its status (with the latest decision)."""

    namespace: str
    name: str
    conditions: tuple[Condition, ...]


Action = Decision | ScaleAction | FetchAction | StatusAction
