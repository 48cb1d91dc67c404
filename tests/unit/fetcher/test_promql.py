"""PromQL builders: escaping, scoping, and a query count that does not depend on the VAs."""

from __future__ import annotations

import re

import pytest

from services.fetcher import promql


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", "plain"),
        ('a"b', 'a\\"b'),
        ("back\\slash", "back\\\\slash"),
        ("line\nbreak", "line\\nbreak"),
    ],
)
def test_string_literals_are_escaped(value: str, literal: str) -> None:
    assert promql.escape_string(value) == literal


def test_regex_values_match_literally() -> None:
    # As RE2 (and Python) read it after PromQL string unescaping, the pattern matches exactly the values.
    rhs = promql.any_of(["meta-llama/Llama-3.1-8B", "a.b", "x|y", "a.b"])
    pattern = rhs.encode().decode("unicode_escape")
    assert re.fullmatch(pattern, "a.b") and re.fullmatch(pattern, "x|y")
    assert re.fullmatch(pattern, "meta-llama/Llama-3.1-8B")
    assert not re.fullmatch(pattern, "axb") and not re.fullmatch(pattern, "x")


def test_batched_queries_cover_namespaces_and_group_by_pod() -> None:
    qs = promql.queries(promql.batched(["b", "a", "b"]), rate_window=60)
    assert len(qs) == 12
    kv = qs[0].promql
    assert kv == 'max by (namespace, model_name, pod) (vllm:kv_cache_usage_perc{namespace=~"a|b"})'
    assert 'sum by (namespace, model_name, pod) (rate(vllm:request_success_total{namespace=~"a|b"}[60s]))' in [
        q.promql for q in qs
    ]
    assert all("pod=~" not in q.promql for q in qs)


def test_per_va_queries_are_restricted_to_the_pods() -> None:
    qs = promql.queries(promql.per_va("team-a", ["p-1", "p.0"]), rate_window=30, itl_metric=promql.LEGACY_ITL_METRIC)
    assert all('namespace="team-a",pod=~"p-1|p\\\\.0"' in q.promql for q in qs)
    assert any("vllm:time_per_output_token_seconds_sum" in q.promql for q in qs)


def test_query_count_is_the_same_for_one_or_many_namespaces() -> None:
    one = promql.queries(promql.batched(["a"]), rate_window=60)
    many = promql.queries(promql.batched([f"ns-{i}" for i in range(200)]), rate_window=60)
    assert len(one) == len(many)


@pytest.mark.parametrize(("seconds", "text"), [(60, "60s"), (0.5, "500ms"), (300.0, "300s")])
def test_durations(seconds: float, text: str) -> None:
    assert promql.duration(seconds) == text


def test_availability_escapes_the_model() -> None:
    q = promql.availability(model_id='x"y', namespace="ns")
    assert q == 'count(vllm:kv_cache_usage_perc{namespace="ns",model_name="x\\"y"})'


def test_the_gateway_queue_is_one_query_per_model_whatever_the_vas() -> None:
    assert promql.gateway_queue() == "sum by (target_model_name) (inference_extension_flow_control_queue_size)"
    assert promql.gateway_queue("epp_queue") == "sum by (target_model_name) (epp_queue)"
