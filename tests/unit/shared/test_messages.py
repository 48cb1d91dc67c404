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


# ------------------------------------------------------------------ hostile payloads (issue #12, items 1-2)

HEAD = b'"namespace":"llm","name":"llama","at":"2026-01-02T03:04:05Z"'
DECODERS = {
    "targets": m.targets_decoder,
    "metrics": m.metrics_decoder,
    "events": m.events_decoder,
    "fetch": m.fetch_decoder,
    "any": m.any_decoder,
}
KIND_FOR = {"targets": "target.v1", "metrics": "metrics.v1", "events": "invalidation.v1", "fetch": "fetch.v1", "any": "target.v1"}


def _deep(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


@pytest.mark.parametrize("decoder_name", list(DECODERS))
@pytest.mark.parametrize(
    "shape",
    ["unknown_field_arrays", "unknown_field_objects", "before_a_bad_field", "root_arrays", "inside_known_field"],
)
def test_deep_nesting_is_a_message_error_never_recursion_error(decoder_name: str, shape: str) -> None:
    """~2 KB nested thousands of levels deep raised RecursionError out of decode() and killed consumers."""
    kind = KIND_FOR[decoder_name].encode()
    deep_objects = b'{"a":' * 5000 + b"1" + b"}" * 5000
    payload = {
        "unknown_field_arrays": b'{"kind":"' + kind + b'",' + HEAD + b',"x":' + _deep(5000) + b"}",
        "unknown_field_objects": b'{"kind":"' + kind + b'",' + HEAD + b',"x":' + deep_objects + b"}",
        # The typed decode fails fast on "namespace", then the kind lookup walks the deep field.
        "before_a_bad_field": b'{"namespace":1,"x":' + _deep(5000) + b',"kind":"' + kind + b'"}',
        "root_arrays": _deep(100_000),
        "inside_known_field": b'{"kind":"' + kind + b'",' + HEAD + b',"pods":' + _deep(5000) + b"}",
    }[shape]
    with pytest.raises(m.MessageError) as err:
        DECODERS[decoder_name].decode(payload)
    assert err.value.reason in {"too_deep", "malformed", "invalid"}
    with pytest.raises(m.MessageError):
        m.peek_kind(payload)


def test_deep_nesting_in_an_unknown_field_is_reported_as_too_deep() -> None:
    payload = b'{"kind":"target.v1",' + HEAD + b',"x":' + _deep(5000) + b"}"
    with pytest.raises(m.MessageError) as err:
        m.targets_decoder.decode(payload)
    assert err.value.reason == "too_deep"


def test_a_payload_over_the_size_limit_is_refused_before_parsing() -> None:
    huge = b'{"kind":"target.v1",' + HEAD + b',"model_id":"' + b"x" * m.MAX_PAYLOAD + b'"}'
    with pytest.raises(m.MessageError) as err:
        m.targets_decoder.decode(huge)
    assert err.value.reason == "too_large"
    at_limit = b'{"kind":"target.v1",' + HEAD + b',"model_id":"' + b"x" * (m.MAX_PAYLOAD - 200) + b'"}'
    assert isinstance(m.targets_decoder.decode(at_limit), m.Target)


def _target(**fields: object) -> bytes:
    raw: dict[str, object] = {"kind": "target.v1", "namespace": "llm", "name": "llama", "at": "2026-01-02T03:04:05Z"}
    raw.update(fields)
    return json.dumps(raw).encode()


def _snapshot(**fields: object) -> bytes:
    raw: dict[str, object] = {
        "kind": "metrics.v1", "namespace": "llm", "name": "llama", "at": "2026-01-02T03:04:05Z",
        "collected_at": "2026-01-02T03:04:05Z",
    }
    raw.update(fields)
    return json.dumps(raw).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_target(name="Not_A_Kubernetes_Name"), "invalid_name"),
        (_target(name="llama\n"), "invalid_name"),
        (_target(name="x" * 254), "invalid_name"),
        (_target(namespace="LLM"), "invalid_name"),
        (_target(namespace="a.b"), "invalid_name"),
        (_target(namespace="wva.>"), "invalid_name"),
        (_target(at="2026-01-02T03:04:05"), "invalid"),  # no time zone: cannot be compared with one
        (_target(min_replicas=-1), "invalid"),
        (_target(spec_replicas=2**31), "invalid"),  # replicas are an int32 in Kubernetes
        (_target(deployment_generation=2**70), "invalid"),
        (_target(variant_cost=-3.0), "invalid"),
        (_target(pods=[{"name": "Pod_1"}]), "invalid"),
        (_target(pods=[{"name": "p", "address": "evil.example/admin?x=1:80"}]), "invalid"),
        (_target(pods=[{"name": "p", "address": "user:pw@10.0.0.1:80"}]), "invalid"),
        (_target(scale_target={"name": "../../namespaces/kube-system"}), "invalid"),
        (_snapshot(allocation={"arrival_rate": -1.0}), "invalid"),
        (_snapshot(replicas=[{"pod": "p", "kv_cache_usage": "INF"}]).replace(b'"INF"', b"1e999"), "invalid"),
        (_snapshot(replicas=[{"pod": "p", "kv_cache_usage": float("inf")}]), "malformed"),  # "Infinity"
        (_snapshot(replicas=[{"pod": "p", "num_gpu_blocks": -5}]), "invalid"),
        (_snapshot(collected_at="2026-01-02T03:04:05"), "invalid"),
        (b'{"kind":"metrics.v1","replicas":[{"pod":"p","waiting":NaN}]}', "malformed"),
        (b"\xff\xfe\x00garbage", "malformed"),
        (b"", "malformed"),
        (b'{"kind":"' + b"k" * 10_000 + b'"}', "unknown_kind"),
    ],
)
def test_fields_are_validated_as_they_are_decoded(payload: bytes, reason: str) -> None:
    decoder = m.metrics_decoder if b"metrics.v1" in payload else m.targets_decoder
    with pytest.raises(m.MessageError) as err:
        decoder.decode(payload)
    assert err.value.reason == reason
    assert len(str(err.value)) < 300  # a detail never carries a whole hostile payload into a log


def test_what_real_producers_send_still_decodes() -> None:
    ipv6 = m.Target(
        namespace="llm", name="llama.v2", at=AT, pods=(m.PodRef(name="p-0", address="[fd00::1]:8000"),),
        scale_target=m.ScaleTarget(name=""),
    )
    assert m.targets_decoder.decode(m.encode(ipv6)) == ipv6
    dns = m.Target(namespace="llm", name="x", at=AT, pods=(m.PodRef(name="p-0", address="pod-0.vllm.llm:8000"),))
    assert m.targets_decoder.decode(m.encode(dns)) == dns


def test_same_content_ignores_only_the_timestamp() -> None:
    target = SAMPLES[0]
    assert isinstance(target, m.Target)
    later = msgspec.structs.replace(target, at=datetime(2027, 1, 1, tzinfo=UTC))
    assert m.same_content(target, later)
    assert not m.same_content(target, msgspec.structs.replace(later, spec_replicas=3))
    assert not m.same_content(target, None) and m.same_content(None, None)
    assert not m.same_content(m.TargetDeleted(namespace="llm", name="llama-a100", at=AT), m.MetricsDeleted(namespace="llm", name="llama-a100", at=AT))


_IMMUTABLE = (
    msgspec.inspect.StrType, msgspec.inspect.IntType, msgspec.inspect.FloatType, msgspec.inspect.BoolType,
    msgspec.inspect.NoneType, msgspec.inspect.DateTimeType, msgspec.inspect.LiteralType,
)


def _struct_types(t: msgspec.inspect.Type, found: dict[type, msgspec.inspect.StructType]) -> None:
    """Every Struct type reachable from ``t``; fails on a field type that could hold a cycle."""
    if isinstance(t, _IMMUTABLE):
        return
    if isinstance(t, msgspec.inspect.UnionType):
        for member in t.types:
            _struct_types(member, found)
    elif isinstance(t, msgspec.inspect.VarTupleType):
        _struct_types(t.item_type, found)
    elif isinstance(t, msgspec.inspect.StructType):
        if t.cls not in found:
            found[t.cls] = t
            for f in t.fields:
                _struct_types(f.type, found)
    else:
        raise AssertionError(f"{t!r}: a mutable field could make an untracked message part of a cycle")


def test_messages_are_immutable_and_not_tracked_by_the_garbage_collector() -> None:
    import gc

    found: dict[type, msgspec.inspect.StructType] = {}
    _struct_types(msgspec.inspect.type_info(m.AnyMessage), found)
    assert m.ReplicaMetrics in found and m.Cursor in found  # nested ones too
    for cls in found:
        assert cls.__struct_config__.frozen and not cls.__struct_config__.gc, cls.__name__
    decoded = m.any_decoder.decode(m.encode(SAMPLES[0]))
    assert isinstance(decoded, m.Target) and not gc.is_tracked(decoded) and not gc.is_tracked(decoded.pods[0])


def test_interned_targets_are_equal_and_share_their_repeated_strings() -> None:
    target = SAMPLES[0]
    assert isinstance(target, m.Target)
    other = msgspec.structs.replace(target, name="llama-h100", scale_target=m.ScaleTarget(name="llama-h100"))
    a, b = (m.targets_decoder.decode(m.encode(t)) for t in (target, other))  # each with its own strings
    assert isinstance(a, m.Target) and isinstance(b, m.Target)
    ia, ib = m.interned(a), m.interned(b)
    assert ia == a and ib == b
    for field in ("namespace", "model_id", "accelerator", "controller_instance"):
        assert getattr(ia, field) is getattr(ib, field), field
    assert ia.scale_target.kind is ib.scale_target.kind and ia.scale_target.api_version is ib.scale_target.api_version
    assert ia.pods[0].phase is ib.pods[0].phase
    assert ib.scale_target.name is ib.name  # a scale target naming the VA itself keeps one string
