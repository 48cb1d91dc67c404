"""Stable reason codes of decisions, and the VA condition types and reasons (WVA's names).

Reason codes are snake_case and never change meaning; dashboards and replays depend on them.
"""

from __future__ import annotations

from typing import Final

# ------------------------------------------------------------------ decision reason codes
SCALE_UP_SATURATED: Final = "scale_up_saturated"  # no non-saturated replica left
SCALE_UP_SPARE_KV_LOW: Final = "scale_up_spare_kv_low"  # average spare KV below kvSpareTrigger
SCALE_UP_SPARE_QUEUE_LOW: Final = "scale_up_spare_queue_low"  # average spare queue below queueSpareTrigger
SCALE_UP_FROM_ZERO: Final = "scale_up_from_zero"  # the group was at zero and needs a replica
SCALE_UP_CAPACITY: Final = "scale_up_required_capacity"  # V2: demand above what is ready or coming
SCALE_DOWN_SPARE_CAPACITY: Final = "scale_down_spare_capacity"  # safe for the whole stabilization window
SCALE_DOWN_PACED: Final = "scale_down_paced"  # a stage: as far down as the stabilization window allows
SCALE_TO_ZERO: Final = "scale_to_zero"  # no request during the retention window
BOUNDS_CLAMPED: Final = "bounds_clamped"  # the result was moved into [minReplicas, maxReplicas]
HOLD_NO_TRIGGER: Final = "hold_no_trigger"
HOLD_TRANSITION: Final = "hold_transition"
HOLD_STALE_METRICS: Final = "hold_stale_metrics"
HOLD_INVALIDATED: Final = "hold_invalidated"
HOLD_METRICS_UNAVAILABLE: Final = "hold_metrics_unavailable"
HOLD_PROBLEMS: Final = "hold_problems"
HOLD_UNRESOLVED: Final = "hold_unresolved"
HOLD_CONFLICT: Final = "hold_target_conflict"  # another VA names the same Deployment
HOLD_STABILIZING: Final = "hold_stabilizing"
HOLD_AT_BOUNDS: Final = "hold_at_bounds"

SCALE_UP_REASONS: Final = {
    "saturated": SCALE_UP_SATURATED,
    "spare_kv": SCALE_UP_SPARE_KV_LOW,
    "spare_queue": SCALE_UP_SPARE_QUEUE_LOW,
}

# Group holds, most important first: the first one found across the group's VAs is the group's reason.
HOLD_PRIORITY: Final = (
    HOLD_PROBLEMS,
    HOLD_UNRESOLVED,
    HOLD_CONFLICT,
    HOLD_METRICS_UNAVAILABLE,
    HOLD_INVALIDATED,
    HOLD_STALE_METRICS,
)

# ------------------------------------------------------------------ conditions (WVA's names)
TARGET_RESOLVED: Final = "TargetResolved"
METRICS_AVAILABLE: Final = "MetricsAvailable"
OPTIMIZATION_READY: Final = "OptimizationReady"

SCALE_TARGET_FOUND: Final = "ScaleTargetFound"
SCALE_TARGET_NOT_FOUND: Final = "ScaleTargetNotFound"
SCALE_TARGET_CONFLICT: Final = "ScaleTargetConflict"
ACTUATION_REFUSED: Final = "ActuationRefused"  # the VA in the Kubernetes API does not allow the step
METRICS_FOUND: Final = "MetricsFound"
METRICS_MISSING: Final = "MetricsMissing"
METRICS_STALE: Final = "MetricsStale"
PROMETHEUS_ERROR: Final = "PrometheusError"
OPTIMIZATION_SUCCEEDED: Final = "OptimizationSucceeded"
OPTIMIZATION_FAILED: Final = "OptimizationFailed"
METRICS_UNAVAILABLE: Final = "MetricsUnavailable"

# Holds that are about the VA's spec or target, not its metrics: OptimizationReady says OptimizationFailed.
SPEC_HOLDS: Final = frozenset({HOLD_PROBLEMS, HOLD_UNRESOLVED, HOLD_CONFLICT})
METRIC_HOLDS: Final = frozenset({HOLD_METRICS_UNAVAILABLE, HOLD_INVALIDATED, HOLD_STALE_METRICS})
