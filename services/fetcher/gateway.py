"""The inference gateway's queue per model, as both backends read it (docs/algorithms.md, "Scale from
zero (scaleToZero) and to zero").

The Gateway API Inference Extension exports the requests waiting in its flow-control queue as a gauge
labelled with the model, ``inference_extension_flow_control_queue_size{target_model_name=...}``
(``WVA_GATEWAY_QUEUE_METRIC``). A model at zero has no pods, so this is the only sign of its demand;
V2 and the SLO analyzer count it in every model's demand too. The fetcher reads it once per collection
— one PromQL query, or one scrape of ``WVA_GATEWAY_METRICS_URL`` — whatever the number of VAs, and puts
each model's value in every snapshot of that model (``allocation.gateway_queue``):

- the metric has no series at all: ``None`` (no gateway reports a queue);
- it has series, none for this model: ``0`` (a gateway is there, nothing of this model waits);
- several series for one model (several gateway replicas, each with its own queue): their sum.

A gateway that cannot be read does not fail the snapshots: the pods' metrics are still good, and a
gateway outage must not stop every model's scaling. The queue is then ``None`` (as without a gateway),
the failure counted in ``wva_fetcher_gateway_failures_total`` and logged, and each snapshot's reason
says ``gateway queue unknown: …``. Consequence: while the gateway cannot be read, a model at zero is
not brought back by its queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

from services.fetcher import answers, telemetry
from services.fetcher.collector import CollectorError
from services.fetcher.promql import GATEWAY_MODEL_LABEL

log = logging.getLogger("wva.fetcher.gateway")

# Model id -> requests waiting at the gateway; None: no gateway reports the metric (or it could not be read).
Queues = Mapping[str, float] | None


def queue_of(queues: Queues, model_id: str) -> float | None:
    """One model's queue: None without a gateway, 0 when the gateway has nothing of this model."""
    if queues is None:
        return None
    return queues.get(model_id, 0.0)


def _add(queues: dict[str, float], model: object, value: float) -> None:
    if isinstance(model, str) and model:
        # NaN stays NaN: assemble() drops and counts it for each snapshot of the model.
        queues[model] = queues.get(model, 0.0) + value


def from_series(result: Iterable[answers.Series]) -> Queues:
    """Queues from a decoded PromQL answer (``sum by (target_model_name)``; ``answers`` already dropped
    what is not shaped like a series). A series without a usable sample is skipped; one without the
    model label (or with a label that is not a string) shows a gateway is there but names no model."""
    queues: dict[str, float] = {}
    series_seen = False
    for series in result:
        number = series.number()
        if number is None:
            continue
        series_seen = True
        _add(queues, series.metric.target_model_name, number)
    return queues if series_seen else None


def from_text(text: str, *, metric: str) -> Queues:
    """Queues from the gateway's ``/metrics`` text; the parser's errors propagate to the caller."""
    queues: dict[str, float] = {}
    series_seen = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != metric:
                continue
            series_seen = True
            _add(queues, sample.labels.get(GATEWAY_MODEL_LABEL), float(sample.value))
    return queues if series_seen else None


def failed(backend: str, error: CollectorError) -> str:
    """Count and log a gateway that could not be read; the note every snapshot's reason gets."""
    telemetry.GATEWAY_FAILURES.labels(backend=backend).inc()
    log.warning("could not read the gateway's queue: %s", error, extra={"detail": error.detail, "backend": backend})
    return f"gateway queue unknown: {error}"
