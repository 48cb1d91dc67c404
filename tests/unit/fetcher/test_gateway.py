"""The gateway's queue per model from a PromQL answer or a /metrics text: no series means no gateway
(None), series of other models only mean nothing waits for this one (0), hostile values stay visible
so that assembly drops and counts them."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.fetcher import answers, gateway
from services.fetcher.collector import CollectorError

TEXT = """\
# HELP inference_extension_flow_control_queue_size Requests waiting
# TYPE inference_extension_flow_control_queue_size gauge
inference_extension_flow_control_queue_size{target_model_name="org/a"} 3.0
inference_extension_flow_control_queue_size{target_model_name="org/b"} 0.0
inference_extension_flow_control_queue_size{target_model_name="org/a",priority="high"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="org/a"} 40.0
"""


def test_text_sums_every_series_of_a_model_and_ignores_other_metrics() -> None:
    queues = gateway.from_text(TEXT, metric="inference_extension_flow_control_queue_size")
    assert queues == {"org/a": 5.0, "org/b": 0.0}
    assert gateway.queue_of(queues, "org/a") == 5.0
    assert gateway.queue_of(queues, "org/other") == 0.0  # a gateway is there; nothing of this model waits


def test_no_series_of_the_metric_means_no_gateway() -> None:
    assert gateway.from_text("# TYPE up gauge\nup 1\n", metric="inference_extension_flow_control_queue_size") is None
    assert gateway.from_series([]) is None
    assert gateway.queue_of(None, "org/a") is None


def test_a_promql_answer_is_read_by_its_model_label_and_bad_series_are_skipped() -> None:
    result: list[Any] = [
        {"metric": {"target_model_name": "org/a"}, "value": [1.0, "7"]},
        {"metric": {"target_model_name": "org/b"}, "value": [1.0, "not a number"]},  # kept as NaN
        {"metric": {}, "value": [1.0, "4"]},  # no model label: a gateway is there, the series names nobody
        {"metric": {"target_model_name": 12}, "value": [1.0, "4"]},
        "not a series",
        {"metric": {"target_model_name": "org/c"}, "value": "4"},
        {"metric": None, "value": [1.0, "4"]},
    ]
    queues = gateway.from_series(answers.series(json.dumps({"data": {"result": result}}).encode()))
    assert queues is not None
    assert queues["org/a"] == 7.0 and math.isnan(queues["org/b"]) and set(queues) == {"org/a", "org/b"}
    nothing = answers.series(json.dumps({"data": {"result": ["junk", {"value": [1, "2"]}]}}).encode())
    assert gateway.from_series(nothing) is None  # nothing shaped like a series


def test_hostile_text_raises_for_the_caller_to_handle() -> None:
    with pytest.raises(ValueError):  # the parser's own error, whatever its text
        gateway.from_text('inference_extension_flow_control_queue_size{target_model_name="a} 1\n', metric="inference_extension_flow_control_queue_size")


def test_a_failure_is_counted_and_becomes_a_short_note() -> None:
    def count() -> float:
        return REGISTRY.get_sample_value("wva_fetcher_gateway_failures_total", {"backend": "scrape"}) or 0.0

    before = count()
    note = gateway.failed("scrape", CollectorError("gateway: unreachable", detail="http://u:p@gw:1/metrics"))
    assert note == "gateway queue unknown: gateway: unreachable"
    assert count() == before + 1
