"""Analyzers: what a model group needs, from its variants' digested metrics (docs/algorithms.md).

One module per analyzer behind one interface, :class:`Analyzer`: ``recommend(group) -> Recommendation``,
a count per variant with the reason and the numbers behind it. The core runs the chosen analyzer only
when the group's metrics are usable; pacing and bounds come after it and are the same for every
analyzer. ``saturation`` is WVA's V1 rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.scaler.digest import Digest
from services.scaler.scaling_config import ScalingConfig
from shared.messages import DecisionNumbers


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantView:
    """One variant of a model group as an analyzer sees it."""

    name: str
    cost: float
    min_replicas: int
    max_replicas: int | None
    spec: int  # the Deployment's spec replicas
    ready: int
    expected: int  # spec, or the count an applied scale is still on its way to
    frozen: bool  # paused or dry-run: decided, never actuated
    metrics: Digest


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupView:
    """A model group (namespace, modelID) with usable metrics for every variant, sorted by name."""

    namespace: str
    model_id: str
    variants: tuple[VariantView, ...]
    config: ScalingConfig
    now: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Recommendation:
    """Replicas per variant (in the group's order), why, and the figures behind it."""

    desired: tuple[int, ...]
    reason: str
    detail: str
    numbers: DecisionNumbers


class Analyzer(Protocol):
    name: str

    def recommend(self, group: GroupView) -> Recommendation: ...
