"""The scaler's Prometheus metrics: WVA-compatible gauges (what an HPA or KEDA follows) and counters."""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import Counter, Gauge

from shared.messages import Decision

LABELS: Final = ("variant_name", "namespace", "accelerator_type")

DESIRED: Final = Gauge("wva_desired_replicas", "Replicas wva wants for the variant", LABELS)
CURRENT: Final = Gauge("wva_current_replicas", "Replicas the variant's Deployment has", LABELS)
RATIO: Final = Gauge("wva_desired_ratio", "desired / current replicas (desired when current is 0)", LABELS)
SCALING: Final = Counter(
    "wva_replica_scaling_total",
    "Decisions that change a variant's replica count",
    ["variant_name", "namespace", "direction", "reason"],
)
# Per model group, as WVA exports them (token-capacity analysis; absent for V1 decisions).
MODEL_LABELS: Final = ("model_name", "namespace")
REQUIRED_CAPACITY: Final = Gauge(
    "wva_required_capacity", "Tokens of capacity the model lacks: demand / scaleUpThreshold - anticipated supply", MODEL_LABELS
)
SPARE_CAPACITY: Final = Gauge(
    "wva_spare_capacity", "Tokens of capacity the model could give up: supply - demand / scaleDownBoundary", MODEL_LABELS
)
SATURATION_UTILIZATION: Final = Gauge(
    "wva_saturation_utilization", "The model's token demand over its ready supply (1: at capacity)", MODEL_LABELS
)
ACTUATIONS: Final = Counter("wva_scaler_actuations_total", "Scale patches by outcome", ["outcome"])
DECISIONS: Final = Counter("wva_scaler_decisions_total", "Decisions published, by reason", ["reason"])
EVENTS: Final = Counter("wva_scaler_events_total", "Events handled by the core, by kind", ["kind"])
FETCH_REQUESTS: Final = Counter("wva_scaler_fetch_requests_total", "Fresh-snapshot requests, by outcome", ["outcome"])
CONFIG_RELOADS: Final = Counter("wva_scaler_config_reloads_total", "Scaling config loads, by outcome", ["outcome"])
WATCH_RESTARTS: Final = Counter(
    "wva_scaler_watch_restarts_total",
    "List-then-watch restarts of the ConfigMap and VariantAutoscalings, by kind and reason",
    ["kind", "reason"],
)
INPUT_WARNINGS: Final = Counter(
    "wva_scaler_input_warnings_total", "Inputs used with a correction (e.g. clock_skew: a future timestamp)", ["reason"]
)


class Gauges:
    """Remembers each VA's label sets so that a deleted VA's series can be removed."""

    def __init__(self) -> None:
        self._labels: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._scalings: dict[tuple[str, str], set[tuple[str, str, str, str]]] = {}
        self._models: dict[tuple[str, str], tuple[str, str]] = {}  # VA -> its model's labels

    def decided(self, decision: Decision) -> None:
        key = (decision.namespace, decision.name)
        labels = (decision.name, decision.namespace, decision.accelerator)
        previous = self._labels.get(key)
        if previous is not None and previous != labels:
            self._remove(previous)
        self._labels[key] = labels
        DESIRED.labels(*labels).set(decision.desired)
        CURRENT.labels(*labels).set(decision.current)
        RATIO.labels(*labels).set(decision.desired / decision.current if decision.current else decision.desired)
        n = decision.numbers
        if n.required is not None and n.spare is not None and n.demand is not None:
            model = (decision.model_id, decision.namespace)
            self._models[key] = model
            REQUIRED_CAPACITY.labels(*model).set(n.required)
            SPARE_CAPACITY.labels(*model).set(n.spare)
            SATURATION_UTILIZATION.labels(*model).set(n.demand / n.supply if n.supply else 0.0)
        if decision.desired != decision.current and not decision.reason.startswith("hold_"):
            direction = "up" if decision.desired > decision.current else "down"
            scaling = (decision.name, decision.namespace, direction, decision.reason)
            self._scalings.setdefault(key, set()).add(scaling)
            SCALING.labels(*scaling).inc()

    def current(self, namespace: str, name: str, replicas: int) -> None:
        labels = self._labels.get((namespace, name))
        if labels is not None:
            CURRENT.labels(*labels).set(replicas)

    def deleted(self, namespace: str, name: str) -> None:
        labels = self._labels.pop((namespace, name), None)
        if labels is not None:
            self._remove(labels)
        for scaling in self._scalings.pop((namespace, name), set()):
            with contextlib.suppress(KeyError):
                SCALING.remove(*scaling)
        model = self._models.pop((namespace, name), None)
        if model is not None and model not in self._models.values():  # its model's last VA
            for gauge in (REQUIRED_CAPACITY, SPARE_CAPACITY, SATURATION_UTILIZATION):
                with contextlib.suppress(KeyError):
                    gauge.remove(*model)

    @staticmethod
    def _remove(labels: tuple[str, str, str]) -> None:
        for gauge in (DESIRED, CURRENT, RATIO):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
