"""The scaler's Prometheus metrics: WVA-compatible gauges (what an HPA or KEDA follows) and counters."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Final

import msgspec
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from shared.messages import Decision

LABELS: Final = ("variant_name", "namespace", "accelerator_type")
MODEL_LABELS: Final = ("model_name", "namespace")  # per model group, as WVA exports them (V2/SLO decisions)

SCALING: Final = Counter(
    "wva_replica_scaling_total",
    "Decisions that change a variant's replica count",
    ["variant_name", "namespace", "direction", "reason"],
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


DESIRED: Final = "wva_desired_replicas"  # the gauge the HPA, KEDA and prometheus-adapter samples follow
_VARIANT_GAUGES: Final = (
    (DESIRED, "Replicas wva wants for the variant"),
    ("wva_current_replicas", "Replicas the variant's Deployment has"),
    ("wva_desired_ratio", "desired / current replicas (desired when current is 0)"),
)
_MODEL_GAUGES: Final = (
    ("wva_required_capacity", "Tokens of capacity the model lacks: demand / scaleUpThreshold - anticipated supply"),
    ("wva_spare_capacity", "Tokens of capacity the model could give up: supply - demand / scaleDownBoundary"),
    ("wva_saturation_utilization", "The model's token demand over its ready supply (1: at capacity)"),
)


class _Variant(msgspec.Struct, gc=False):
    """A variant's gauges: its labels and ratio are made when /metrics is read (a tuple and a float
    fewer per VA); the ratio is of the counts the decision had. Holds numbers and a string only, so
    the garbage collector need not track it."""

    accelerator: str
    desired: int
    current: int
    decided_current: int

    @property
    def ratio(self) -> float:
        return self.desired / self.decided_current if self.decided_current else self.desired


class Gauges(Collector):
    """The WVA-compatible gauges (what an HPA or KEDA follows): per variant ``wva_desired_replicas``,
    ``wva_current_replicas``, ``wva_desired_ratio``, per model ``wva_required_capacity``,
    ``wva_spare_capacity``, ``wva_saturation_utilization``; a deleted VA's series go with it.

    One custom collector over a small record per VA: prometheus_client's labelled gauges cost about
    2.2 KB per VA (a child with its own lock and value for each of three gauges), more than the
    scaler core keeps for it (docs/benchmarks.md, "Memory per tracked VA")."""

    def __init__(self) -> None:
        self._variants: dict[str, dict[str, _Variant]] = {}  # namespace -> name -> gauges
        self._model_values: dict[tuple[str, str], tuple[float, float, float]] = {}
        self._models: dict[tuple[str, str], tuple[str, str]] = {}  # VA -> its model's labels
        self._scalings: dict[tuple[str, str], set[tuple[str, str, str, str]]] = {}
        self._lock = threading.Lock()  # /metrics may be read from another thread

    def decided(self, decision: Decision) -> None:
        key = (decision.namespace, decision.name)
        n = decision.numbers
        with self._lock:
            self._variants.setdefault(decision.namespace, {})[decision.name] = _Variant(
                decision.accelerator, decision.desired, decision.current, decision.current
            )
            if n.required is not None and n.spare is not None and n.demand is not None:
                model = (decision.model_id, decision.namespace)
                self._models[key] = model
                self._model_values[model] = (n.required, n.spare, n.demand / n.supply if n.supply else 0.0)
        if decision.desired != decision.current and not decision.reason.startswith("hold_"):
            direction = "up" if decision.desired > decision.current else "down"
            scaling = (decision.name, decision.namespace, direction, decision.reason)
            self._scalings.setdefault(key, set()).add(scaling)
            SCALING.labels(*scaling).inc()

    def current(self, namespace: str, name: str, replicas: int) -> None:
        with self._lock:
            variant = self._variants.get(namespace, {}).get(name)
            if variant is not None:
                variant.current = replicas

    def deleted(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        with self._lock:
            variants = self._variants.get(namespace)
            if variants is not None:
                variants.pop(name, None)
                if not variants:
                    del self._variants[namespace]
            model = self._models.pop(key, None)
            if model is not None and model not in self._models.values():  # its model's last VA
                self._model_values.pop(model, None)
        for scaling in self._scalings.pop(key, set()):
            with contextlib.suppress(KeyError):
                SCALING.remove(*scaling)

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        with self._lock:
            for namespace, variants in self._variants.items():
                for name, v in variants.items():
                    labels = (name, namespace, v.accelerator)
                    for family, value in zip(families[:3], (v.desired, v.current, v.ratio), strict=True):
                        family.add_metric(labels, float(value))
            for model, values in self._model_values.items():
                for family, value in zip(families[3:], values, strict=True):
                    family.add_metric(model, value)
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, doc, labels=LABELS) for name, doc in _VARIANT_GAUGES] + [
            GaugeMetricFamily(name, doc, labels=MODEL_LABELS) for name, doc in _MODEL_GAUGES
        ]


GAUGES: Final = Gauges()
REGISTRY.register(GAUGES)
