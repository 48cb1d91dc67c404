from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest

from shared import messages as m
from shared import observability

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

SAMPLES: list[msgspec.Struct] = [
    m.Target(
        namespace="llm",
        name="llama-a100",
        at=AT,
        model_id="meta-llama/Llama-3.1-8B",
        variant_cost=40.0,
        accelerator="A100",
        min_replicas=1,
        max_replicas=8,
        scale_target=m.ScaleTarget(name="llama-a100"),
        resolved=True,
        deployment_generation=3,
        template_hash="7d9f",
        spec_replicas=2,
        ready_replicas=2,
        pods=(m.PodRef(name="p-1", ready=True, phase="Running", address="10.0.0.1:8000"),),
        problems=(m.Problem(field="spec.variantCost", message="not a number"),),
    ),
    m.TargetDeleted(namespace="llm", name="llama-a100", at=AT),
    m.MetricsSnapshot(
        namespace="llm",
        name="llama-a100",
        at=AT,
        model_id="meta-llama/Llama-3.1-8B",
        collected_at=AT,
        status="partial",
        reason="ttft missing",
        allocation=m.AllocationMetrics(arrival_rate=3.5, ttft_seconds=0.2),
        replicas=(m.ReplicaMetrics(pod="p-1", kv_cache_usage=0.5, waiting=1, running=4),),
    ),
    m.MetricsDeleted(namespace="llm", name="llama-a100", at=AT),
    m.Invalidation(namespace="llm", name="llama-a100", at=AT, reason="template_changed", deployment_generation=4),
    m.Decision(
        namespace="llm",
        name="llama-a100",
        at=AT,
        current=2,
        desired=3,
        reason="scale_up_spare_kv_low",
        numbers=m.DecisionNumbers(avg_spare_kv=0.095, step=1, chosen_variant="llama-a100"),
    ),
    m.FetchRequest(namespace="llm", name="llama-a100", at=AT, fresh=True),
]


@pytest.mark.parametrize("message", SAMPLES, ids=m.kind_of)
def test_round_trip_through_the_generic_decoder(message: msgspec.Struct) -> None:
    data = m.encode(message)
    assert json.loads(data)["kind"] == m.kind_of(message)
    assert m.any_decoder.decode(data) == message


def test_each_stream_decoder_accepts_its_union_only() -> None:
    target, deleted, snapshot, mdeleted, inval, decision, fetch = SAMPLES
    assert m.targets_decoder.decode(m.encode(target)) == target
    assert m.targets_decoder.decode(m.encode(deleted)) == deleted
    assert m.metrics_decoder.decode(m.encode(snapshot)) == snapshot
    assert m.metrics_decoder.decode(m.encode(mdeleted)) == mdeleted
    assert m.events_decoder.decode(m.encode(inval)) == inval
    assert m.events_decoder.decode(m.encode(decision)) == decision
    assert m.fetch_decoder.decode(m.encode(fetch)) == fetch
    with pytest.raises(m.MessageError) as err:
        m.metrics_decoder.decode(m.encode(target))
    assert err.value.reason == "unknown_kind"


def test_unknown_fields_are_ignored() -> None:
    raw = json.loads(m.encode(SAMPLES[4]))
    raw["added_by_a_newer_producer"] = {"x": 1}
    assert m.events_decoder.decode(json.dumps(raw).encode()) == SAMPLES[4]


def test_missing_field_with_default_decodes() -> None:
    """An older producer that did not send a defaulted field is still understood."""
    raw = {"kind": "target.v1", "namespace": "llm", "name": "x", "at": "2026-01-02T03:04:05Z"}
    target = m.targets_decoder.decode(json.dumps(raw).encode())
    assert isinstance(target, m.Target)
    assert target.min_replicas == 1 and target.variant_cost == 10.0 and target.pods == ()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "malformed"),
        (b"[1,2]", "malformed"),
        (b'{"namespace":"a"}', "malformed"),
        (b'{"kind":"target.v9","namespace":"a","name":"b","at":"2026-01-02T03:04:05Z"}', "unknown_kind"),
        (b'{"kind":"target.v1","namespace":"a","name":"b"}', "invalid"),
        (b'{"kind":"target.v1","namespace":"a","name":"b","at":"yesterday"}', "invalid"),
        (b'{"kind":"invalidation.v1","namespace":"a","name":"b","at":"2026-01-02T03:04:05Z","reason":"x"}', "invalid"),
    ],
)
def test_bad_payloads_raise_one_error_type(payload: bytes, reason: str) -> None:
    decoder = m.events_decoder if b"invalidation" in payload else m.targets_decoder
    with pytest.raises(m.MessageError) as err:
        decoder.decode(payload)
    assert err.value.reason == reason


def test_rejections_are_counted() -> None:
    counter = observability.MESSAGES_REJECTED.labels(subject_kind="targets", reason="unknown_kind")
    before = counter._value.get()
    try:
        m.targets_decoder.decode(b'{"kind":"nope.v1"}')
    except m.MessageError as exc:
        observability.count_rejected("targets", exc.reason)
    assert counter._value.get() == before + 1


def test_non_finite_check() -> None:
    assert m.is_finite_non_negative(0.0)
    assert not m.is_finite_non_negative(float("nan"))
    assert not m.is_finite_non_negative(float("inf"))
    assert not m.is_finite_non_negative(-0.1)
    assert not m.is_finite_non_negative(None)
