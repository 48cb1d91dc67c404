"""Prometheus answers decoded: the typed fast path and the lenient reading give the same series; odd
series are skipped one by one; a body that is not an answer is an AnswerError."""

from __future__ import annotations

import gc
import json
import math
from typing import Any

import pytest

from services.fetcher import answers


def _body(result: Any) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


GOOD = [
    {"metric": {"namespace": "ns", "model_name": "m", "pod": "a-0"}, "value": [1700000000.5, "0.25"]},
    {"metric": {"namespace": "ns", "model_name": "m", "pod": "a-1"}, "value": [1700000000.5, "NaN"]},
    {
        "metric": {"namespace": "ns", "pod": "a-0", "num_gpu_blocks": "1024", "block_size": "16"},
        "value": [1, "1"],
    },
    {"metric": {"namespace": "ns", "pod": "a-2"}, "value": [1, "+Inf"]},
]


def _seen(found: list[answers.Series]) -> list[tuple[str, str, float | None, str | None]]:
    return [(s.metric.namespace, s.metric.pod, s.number(), s.metric.num_gpu_blocks) for s in found]


def test_an_answer_is_read_into_untracked_series() -> None:
    found = answers.series(_body(GOOD))
    seen = _seen(found)
    assert [row[:2] for row in seen] == [("ns", "a-0"), ("ns", "a-1"), ("ns", "a-0"), ("ns", "a-2")]
    assert seen[0][2] == 0.25 and math.isnan(seen[1][2] or 0.0) and seen[3][2] == math.inf
    assert seen[2][3] == "1024" and found[2].metric.block_size == "16"
    # 27,500 series a cycle at 1,000 VAs: none of them is work for the garbage collector.
    assert not any(gc.is_tracked(s) or gc.is_tracked(s.metric) for s in found)


def test_series_that_do_not_fit_are_skipped_and_the_others_read_as_in_a_clean_answer() -> None:
    odd = [
        1,
        "x",
        None,
        {"metric": 5},
        {"value": [1, "2"]},
        {"metric": {"namespace": "ns", "pod": ["a-0"]}, "value": [1, "2"]},  # a label that is not a string
        {"metric": {"namespace": "", "pod": "a-0"}, "value": [1, "2"]},  # an empty namespace
        {"metric": {"namespace": "ns", "pod": "a-3"}, "value": "v"},  # another shape: the pod is still seen
        {"metric": {"namespace": "ns", "pod": "a-4", "num_gpu_blocks": 7}, "value": [1, 10**400]},
        {"metric": {"namespace": "ns", "pod": "a-5"}, "value": [1, 3]},  # a number, not text
    ]
    clean = _seen(answers.series(_body(GOOD)))
    mixed = _seen(answers.series(_body(GOOD[:2] + odd + GOOD[2:])))
    # Not a dict, or no metric dict: skipped. A label that is not a string reads as "" (no pod's series).
    assert [row[:2] for row in mixed if "" in row[:2]] == [("ns", ""), ("", "a-0")]
    pods = [row for row in mixed if "" not in row[:2]]
    assert repr([row for row in pods if row[1] not in {"a-3", "a-4", "a-5"}]) == repr(
        clean
    )  # NaN == NaN in repr
    extra = {row[1]: row for row in pods if row[1] in {"a-3", "a-4", "a-5"}}
    assert extra["a-3"][2] is None  # no usable value
    assert (
        math.isnan(extra["a-4"][2] or 0.0) and extra["a-4"][3] == "7"
    )  # too large for a float: dropped later
    assert extra["a-5"][2] == 3.0


@pytest.mark.parametrize(
    "body",
    [b'{"status": "success"}', b'{"data": null}', _body("not a list"), b"[1, 2]", b'"text"'],
    ids=["no-data", "data-null", "result-not-a-list", "a-list", "a-string"],
)
def test_a_body_that_is_not_a_query_answer(body: bytes) -> None:
    with pytest.raises(answers.AnswerError) as err:
        answers.series(body)
    assert not err.value.unreadable


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"", b'{"data": {"result": ['])
def test_a_body_that_is_not_json_is_unreadable(body: bytes) -> None:
    with pytest.raises(answers.AnswerError) as err:
        answers.series(body)
    assert err.value.unreadable


def test_only_a_pods_series_are_merged_into_its_sample() -> None:
    from services.fetcher import promql
    from services.fetcher.prometheus import _merge

    kv = next(q for q in promql.queries(promql.batched(["ns"]), rate_window=60) if q.field == "kv_cache_usage")
    body = _body(
        [
            {"metric": {"namespace": "ns", "pod": "a-0"}, "value": [1, "0.25"]},
            {"metric": {"namespace": "ns"}, "value": [1, "0.9"]},  # no pod
            {"metric": {"target_model_name": "m"}, "value": [1, "3"]},  # another query's kind of series
        ]
    )
    samples: dict = {}  # type: ignore[type-arg]
    _merge(samples, kv, answers.series(body))
    assert list(samples) == [("ns", "a-0")] and samples[("ns", "a-0")].kv_cache_usage == 0.25
