"""The Kubernetes HorizontalPodAutoscaler's algorithm (pure), as pkg/controller/podautoscaler does it.

One `HPA` per scale target. Every sync (15 s by default) it is given the current spec replicas and a
metric proposal, and returns the replicas to set:

- **Replica calculators.** `pods_metric_replicas` is `calcPlainMetricReplicas` for a `Pods` metric with
  an `AverageValue` target (what a KV-cache HPA through prometheus-adapter uses): the average over the
  pods that report, `ceil(ratio x reporting pods)` unless `|ratio - 1| <= tolerance`; pods without a
  metric count as using the target on a scale-down and nothing on a scale-up, and a result that
  would reverse direction keeps the current count. `external_metric_replicas` is
  `GetExternalPerPodMetricReplicas` for an `External` metric with an `AverageValue` target (KEDA, and
  an HPA on `wva_desired_replicas`): `ceil(value / target)` unless `|value / (target x current) - 1| <=
  tolerance`. Metric values are milli-units (integers), as the metrics APIs serve them.
- **Behaviour** (`normalizeDesiredReplicasWithBehaviors`): the recommendation is stabilized — the
  lowest of the scale-up window's recommendations and the highest of the scale-down window's, the
  scale-down window starting full of the current count when the HPA is new — then limited by the
  scaling policies (per period, the most the policies allow, from the count at the period's start,
  counting this HPA's own scale events), and by `[min, max]`. Defaults: scale up by max(100 %, 4 pods)
  per 15 s at once; scale down by 100 % per 15 s after a 300 s stabilization window.
- **Bounds first.** A target above `max` goes to `max` and one below `min` to `min` at once; a target
  at 0 replicas with `min > 0` is left alone (autoscaling disabled); no metric: no change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

TOLERANCE: Final = 0.1  # --horizontal-pod-autoscaler-tolerance
SYNC_PERIOD: Final = 15.0  # --horizontal-pod-autoscaler-sync-period


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    type: Literal["Pods", "Percent"]
    value: int
    period: float


@dataclass(frozen=True, slots=True)
class Rules:
    stabilization: float
    policies: tuple[ScalingPolicy, ...]
    select: Literal["Max", "Min", "Disabled"] = "Max"


DEFAULT_SCALE_UP: Final = Rules(0.0, (ScalingPolicy("Percent", 100, 15.0), ScalingPolicy("Pods", 4, 15.0)))
DEFAULT_SCALE_DOWN: Final = Rules(300.0, (ScalingPolicy("Percent", 100, 15.0),))


@dataclass(frozen=True, slots=True)
class Behavior:
    scale_up: Rules = DEFAULT_SCALE_UP
    scale_down: Rules = DEFAULT_SCALE_DOWN


def milli(value: float) -> int:
    """A metric value as the metrics APIs serve it: an integer number of milli-units (truncated)."""
    return int(value * 1000.0)


def _usage_ratio(values: list[int], target: int) -> float:
    # GetMetricUsageRatio: the integer average of the milli-values over the target.
    return (sum(values) // len(values)) / target


def pods_metric_replicas(
    *, current: int, values: Mapping[str, float | None], target: float, tolerance: float = TOLERANCE
) -> int | None:
    """Replicas for a `Pods` metric with an `AverageValue` target; `values` per pod, None without a
    metric (starting pods). None when no pod reports (the HPA then does not scale)."""
    target_m = milli(target)
    reported = [milli(v) for v in values.values() if v is not None]
    missing = sum(1 for v in values.values() if v is None)
    if not reported:
        return None
    ratio = _usage_ratio(reported, target_m)
    if not missing:
        if abs(1.0 - ratio) <= tolerance:
            return current
        return math.ceil(ratio * len(reported))
    filled = reported + [target_m if ratio < 1.0 else 0] * missing
    new_ratio = _usage_ratio(filled, target_m)
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    proposed = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and proposed > current) or (new_ratio > 1.0 and proposed < current):
        return current
    return proposed


def external_metric_replicas(
    *, status_replicas: int, value: float, target: float, tolerance: float = TOLERANCE
) -> int:
    """Replicas for an `External` metric with an `AverageValue` target (`status_replicas`: pods that
    exist, ready or not, as the HPA's status counts them)."""
    usage, target_m = milli(value), milli(target)
    if status_replicas <= 0:
        return math.ceil(usage / target_m)
    ratio = usage / (target_m * status_replicas)
    if abs(1.0 - ratio) > tolerance:
        return math.ceil(usage / target_m)
    return status_replicas


@dataclass(slots=True)
class _Event:
    at: float
    change: int


@dataclass
class HPA:
    min_replicas: int
    max_replicas: int
    behavior: Behavior = field(default_factory=Behavior)
    _recommendations: list[tuple[float, int]] | None = None
    _ups: list[_Event] = field(default_factory=list)
    _downs: list[_Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"need 1 <= minReplicas <= maxReplicas, got {self.min_replicas}..{self.max_replicas}"
            )

    def reconcile(self, *, now: float, current: int, proposal: int | None) -> int:
        """One sync: the replicas to set (== `current` for no change)."""
        if current == 0:
            return 0  # scaling is disabled while the target is at zero
        if current > self.max_replicas:
            desired = self.max_replicas
        elif current < self.min_replicas:
            desired = self.min_replicas
        elif proposal is None:
            return current
        else:
            desired = self._normalize(now, current, proposal)
        if desired != current:
            events = self._ups if desired > current else self._downs
            events.append(_Event(now, abs(desired - current)))
        return desired

    def _normalize(self, now: float, current: int, proposal: int) -> int:
        up, down = self.behavior.scale_up, self.behavior.scale_down
        if self._recommendations is None:
            # maybeInitScaleDownStabilizationWindow: a new HPA does not scale down for a window.
            self._recommendations = [(now, current)] if down.stabilization > 0 else []
        up_rec = down_rec = proposal
        for at, rec in self._recommendations:
            if at > now - up.stabilization:
                up_rec = min(up_rec, rec)
            if at > now - down.stabilization:
                down_rec = max(down_rec, rec)
        stabilized = min(max(current, up_rec), down_rec)
        keep = max(up.stabilization, down.stabilization)
        self._recommendations = [(at, rec) for at, rec in self._recommendations if at >= now - keep]
        self._recommendations.append((now, proposal))
        return self._limit(now, current, stabilized)

    def _limit(self, now: float, current: int, desired: int) -> int:
        if desired > current:
            limit = max(self._rate_limit(now, current, self.behavior.scale_up, up=True), current)
            return min(desired, min(self.max_replicas, limit))
        if desired < current:
            limit = min(self._rate_limit(now, current, self.behavior.scale_down, up=False), current)
            return max(desired, max(self.min_replicas, limit))
        return desired

    def _rate_limit(self, now: float, current: int, rules: Rules, *, up: bool) -> int:
        """calculateScaleUpLimitWithScalingRules / calculateScaleDownLimitWithBehaviors."""
        if rules.select == "Disabled":
            return current
        # For a scale-up "Max" picks the largest proposal; for a scale-down the smallest.
        most = (rules.select == "Max") == up
        result: int | None = None
        for policy in rules.policies:
            added = sum(e.change for e in self._ups if e.at > now - policy.period)
            deleted = sum(e.change for e in self._downs if e.at > now - policy.period)
            start = current - added + deleted
            if policy.type == "Pods":
                proposed = start + policy.value if up else start - policy.value
            elif up:
                proposed = math.ceil(start * (1 + policy.value / 100))
            else:
                proposed = int(start * (1 - policy.value / 100))
            pick = max if most else min
            result = proposed if result is None else pick(result, proposed)
        return current if result is None else result
