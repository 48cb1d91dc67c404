"""What goes into the scaler core besides the wire messages: time passing, what actuation did, and the
configuration. Each is an event, so a replay feeds the core exactly what the live shell fed it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from shared.messages import (
    Decision,
    Invalidation,
    MetricsDeleted,
    MetricsSnapshot,
    Ownership,
    Target,
    TargetDeleted,
)


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes: re-evaluate every group (staleness, pacing, scale-to-zero windows) and nudge the
    fetcher for snapshots that are missing."""


AppliedOutcome = Literal["applied", "no_op"]
FailedOutcome = Literal["failed", "target_moved", "not_found", "refused", "fenced"]


@dataclass(frozen=True, slots=True)
class ScaleApplied:
    """The shell set the Deployment's replicas (``no_op``: they already were ``replicas``)."""

    namespace: str
    name: str  # the VA
    replicas: int
    outcome: AppliedOutcome = "applied"


@dataclass(frozen=True, slots=True)
class ScaleFailed:
    """The shell could not set the replicas. ``outcome`` says why in a word (``refused``: the
    VariantAutoscaling in the API does not allow it; ``fenced``: this replica's lease on the group's
    partition was lost or about to expire), ``detail`` in a sentence without secrets."""

    namespace: str
    name: str
    replicas: int
    outcome: FailedOutcome
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Started:
    """The shell began following its input streams: their last sequences at that moment. Decisions
    carry them (``Decision.cursor``) so a replay knows which messages the core read."""

    targets: int
    metrics: int
    events: int


@dataclass(frozen=True, slots=True)
class ConfigData:
    """The scaling ConfigMap's ``data`` (key -> YAML text); None when there is no ConfigMap."""

    data: Mapping[str, str] | None
    source: str = "ConfigMap"


Outcome = ScaleApplied | ScaleFailed
# Decision (any replica's, from wva.decisions) and Ownership (this replica's own) reach the core only
# when replicas share the work through leases (docs/design.md §11).
Message = Target | TargetDeleted | MetricsSnapshot | MetricsDeleted | Invalidation | Decision | Ownership
Event = Message | Tick | ScaleApplied | ScaleFailed | ConfigData | Started
