"""Wire messages: every payload on every wva subject (docs/design.md §3).

Each message is a frozen, keyword-only ``msgspec.Struct`` tagged by a ``kind`` field that carries a
version (``"metrics.v1"``). A stream carries a tagged union, and each union has one typed decoder.

Evolution: adding a field *with a default* is compatible; anything else is a new kind version, and
consumers keep decoding the old one until no producer sends it. Unknown fields are ignored.

Messages are not tracked by the garbage collector (``gc=False``, 16 bytes less each): they are frozen and
hold only strings, numbers, times and tuples of other messages, so they cannot be part of a cycle (a
field of a mutable type would break that; tests/unit/shared/test_messages.py checks every one). The
services hold one or two per VA and make thousands per fetch cycle, and tracked they made the garbage
collector run for them (docs/benchmarks.md, "The fetch cycle at 1,000 VAs and memory per VA").

Every payload is untrusted (docs/design.md §3). A decoder raises :class:`MessageError` and nothing else,
whatever the bytes: a payload larger than :data:`MAX_PAYLOAD` is refused before parsing, one nested
deeper than the interpreter's recursion guard is refused (``too_deep``) instead of raising
``RecursionError``, and the fields are validated as they are decoded — namespaces are RFC 1123 labels
and names (VAs, pods) RFC 1123 subdomains, checked with the very patterns ``shared.subjects`` uses;
timestamps carry a time zone; counts are non-negative integers; metric figures are finite and
non-negative; pod addresses are ``host:port``. Producers are not checked on construction; what they
publish goes through ``shared.subjects`` (names) and the fetcher's own cleaning (figures).

Exceptions::

    ValueError
    └── MessageError           one well-defined error for anything that cannot be decoded;
                               .reason is a short label for a metric: "too_large", "too_deep",
                               "malformed" (not JSON / wrong shape), "unknown_kind", "invalid_name",
                               "invalid" (a known kind whose fields do not validate); the checks of
                               ``shared.intake`` add "invalid_subject", "wrong_subject" and
                               "subject_mismatch"

Consumers read wire messages through ``shared.intake``, which also checks the payload against its
subject, counts rejections and logs them at a bounded rate.
"""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime
from typing import Annotated, Final, Generic, Literal, NewType, TypeGuard, TypeVar

import msgspec

from shared import subjects

SnapshotStatus = Literal["ok", "partial", "unavailable"]
InvalidationReason = Literal["template_changed", "replicas_changed", "target_changed", "va_deleted", "relist"]
ScalerMode = Literal["scale", "hpa", "dry-run"]

MAX_PAYLOAD: Final = 1 << 20
"""Largest payload a decoder reads (1 MiB). It is nats-server's default ``max_payload``, so nothing
larger reaches a service on a default server; it bounds the work and memory of one decode where an
operator raised that limit. The largest real message, a Target of a 1,000-pod Deployment, is ~150 KB."""

# Wire field types: the checks run inside msgspec's decoder, in C, on the hot path.
Namespace = Annotated[str, msgspec.Meta(pattern=subjects.LABEL_PATTERN, max_length=subjects.MAX_LABEL)]
Name = Annotated[str, msgspec.Meta(pattern=subjects.SUBDOMAIN_PATTERN, max_length=subjects.MAX_SUBDOMAIN)]
OptionalName = Annotated[
    str, msgspec.Meta(pattern=rf"\A\Z|{subjects.SUBDOMAIN_PATTERN}", max_length=subjects.MAX_SUBDOMAIN)
]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # generations and other int64 counters
Replicas = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]  # Kubernetes counts replicas in an int32
Figure = Annotated[float, msgspec.Meta(ge=0.0, le=sys.float_info.max)]  # finite and non-negative
# host:port of a pod's metrics endpoint (an IPv4 address or a DNS name, or a bracketed IPv6 address);
# nothing that could turn the scrape URL into another one (no "/", "@", "?", "#" or spaces).
Address = Annotated[
    str, msgspec.Meta(pattern=r"\A\Z|\A(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252}):[0-9]{1,5}\Z")
]


PartitionName = Annotated[str, msgspec.Meta(pattern=r"\A[a-z0-9]{1,16}\Z")]

VAKey = NewType("VAKey", tuple[str, str])
"""(namespace, name) of a VariantAutoscaling: how every service keys its per-VA state."""


def va_key(namespace: str, name: str) -> VAKey:
    return VAKey((namespace, name))


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Base(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", omit_defaults=False, gc=False):
    """Every message names its VA and when it was produced (UTC)."""

    namespace: Namespace
    name: Name
    at: Timestamp


# ---------------------------------------------------------------- targets (watcher -> all)


class Problem(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Something wrong with a VA's spec that the scaler reports in its conditions."""

    field: str
    message: str


class ScaleTarget(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    kind: str = "Deployment"
    name: OptionalName = ""  # empty when the VA names none (the target then carries a Problem)
    api_version: str = "apps/v1"


class PodRef(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A pod that currently belongs to the VA's Deployment."""

    name: Name
    ready: bool = False
    phase: str = ""
    address: Address = ""  # host:port of its metrics endpoint, for the scrape collector; may be empty


class Target(_Base, frozen=True, kw_only=True, tag="target.v1"):
    """Everything the pipeline knows about one VA and the Deployment behind it."""

    model_id: str = ""
    variant_cost: Figure = 10.0
    accelerator: str = ""
    min_replicas: Replicas = 1
    max_replicas: Replicas | None = None
    scale_target: ScaleTarget = msgspec.field(default_factory=ScaleTarget)
    resolved: bool = False  # the scale target exists
    deployment_generation: Count = 0
    template_hash: str = ""
    spec_replicas: Replicas = 0
    ready_replicas: Replicas = 0
    updated_replicas: Replicas = 0
    available_replicas: Replicas = 0
    pods: tuple[PodRef, ...] = ()
    va_generation: Count = 0
    paused: bool = False
    dry_run: bool = False
    controller_instance: str = ""
    problems: tuple[Problem, ...] = ()


class TargetDeleted(_Base, frozen=True, kw_only=True, tag="target_deleted.v1"):
    """Tombstone: the VA is gone."""


# ---------------------------------------------------------------- metrics (fetcher -> scaler)


class AllocationMetrics(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Per-VA traffic figures; ``None`` where the backend had no data."""

    arrival_rate: Figure | None = None  # requests per second
    avg_input_tokens: Figure | None = None
    avg_output_tokens: Figure | None = None
    ttft_seconds: Figure | None = None  # average time to first token
    itl_seconds: Figure | None = None  # average inter-token latency
    # Requests of the model waiting in front of its replicas (the inference gateway's flow-control
    # queue), the same on every VA of the model; None where no gateway reports it.
    gateway_queue: Figure | None = None


class ReplicaMetrics(msgspec.Struct, frozen=True, kw_only=True, array_like=False, gc=False):
    """Saturation figures of one pod."""

    pod: Name
    kv_cache_usage: Figure | None = None  # 0..1
    waiting: Figure | None = None
    running: Figure | None = None
    num_gpu_blocks: Count | None = None
    block_size: Count | None = None
    # Over the rate window: the output tokens it generated per second and its average inter-token
    # latency (what the SLO analyzer learns a replica's capacity from, pod by pod).
    generation_tokens_rate: Figure | None = None
    itl_seconds: Figure | None = None


class MetricsSnapshot(_Base, frozen=True, kw_only=True, tag="metrics.v1"):
    model_id: str = ""
    collected_at: Timestamp
    deployment_generation: Count = 0  # the generation of the Target the fetcher collected for
    template_hash: str = ""
    status: SnapshotStatus = "ok"
    reason: str = ""
    allocation: AllocationMetrics = msgspec.field(default_factory=AllocationMetrics)
    replicas: tuple[ReplicaMetrics, ...] = ()
    dropped_values: Count = 0  # NaN/inf/negative values removed before publishing


class MetricsDeleted(_Base, frozen=True, kw_only=True, tag="metrics_deleted.v1"):
    """Tombstone on the metrics subject of a deleted VA."""


# ---------------------------------------------------------------- events


class Invalidation(_Base, frozen=True, kw_only=True, tag="invalidation.v1"):
    reason: InvalidationReason
    deployment_generation: Count = 0
    template_hash: str = ""


class Ownership(_Base, frozen=True, kw_only=True, tag="ownership.v1"):
    """What one replica holds (docs/design.md §11), on ``<prefix>.owners.<service>.<identity>``:
    ``namespace`` is the service, ``name`` the replica's identity, ``owned`` the partitions it holds
    (names: ``"0"``…, or ``"watcher"``) out of ``partitions``. Published whenever that changes; the
    scaler's core reads its own, so a recording replays which groups it decided for, and when."""

    partitions: Count = 0
    owned: Annotated[tuple[PartitionName, ...], msgspec.Meta(max_length=4096)] = ()


class CapacityFigures(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A variant's per-replica capacity as the analyzer used it, and where it came from. V2: in tokens,
    from "k1" (memory-bound), "k2" (compute-bound, learned), "memory" (last known) or "unknown". SLO:
    in requests per second, from a fit of latency on load ("fit r2=…", with ``fit_r2`` and ``points``)
    or its conservative "bound"."""

    variant: str
    capacity: float | None  # per replica, in ``unit``
    source: str
    unit: str = "tokens"
    fit_r2: float | None = None
    points: int = 0


class DecisionNumbers(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The figures behind a decision, so a person can tell why it happened."""

    replicas_total: int = 0
    saturated: int = 0
    non_saturated: int = 0
    avg_spare_kv: float | None = None
    avg_spare_queue: float | None = None
    needed: int | None = None
    step: int = 0
    chosen_variant: str = ""
    bounded: bool = False  # the result was clamped by min/max replicas
    recommended: int | None = None  # the analyzer's count for this VA, before pacing and bounds
    # Token-capacity analysis (V2): demand D, supply S, anticipated supply A, required RC and spare SC
    # capacity, in tokens; the request shape and gateway queue used; each variant's capacity.
    demand: float | None = None
    supply: float | None = None
    anticipated: float | None = None
    required: float | None = None
    spare: float | None = None
    tokens_per_request: float | None = None
    gateway_queue: float | None = None
    capacities: tuple[CapacityFigures, ...] = ()


class Cursor(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Where the scaler was in its input streams when it decided, so a replay can feed exactly what
    the live core had seen: the sequence of the last message consumed from each stream (0: none yet),
    and where it began following them (``start_*``: the stream's last sequence then; up to it the
    scaler read only the last value per subject of targets and metrics, and no invalidation)."""

    targets: int = 0
    metrics: int = 0
    events: int = 0
    start_targets: int = 0
    start_metrics: int = 0
    start_events: int = 0


class Evaluation(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One evaluation of the scaler core: when, what made it evaluate, and where it was in its input
    streams (as a decision's own ``at``, ``trigger`` and ``cursor``)."""

    at: Timestamp
    trigger: str = ""
    cursor: Cursor = msgspec.field(default_factory=Cursor)


class Decision(_Base, frozen=True, kw_only=True, tag="decision.v1"):
    model_id: str = ""
    accelerator: str = ""
    current: Replicas
    desired: Replicas
    applied: bool = False
    mode: ScalerMode = "scale"
    reason: str  # a stable code, e.g. "scale_up_saturated", "hold_stale_metrics"
    detail: str = ""
    numbers: DecisionNumbers = msgspec.field(default_factory=DecisionNumbers)
    # What made the scaler evaluate: "tick" (its periodic timer), "scale_applied"/"scale_failed" (an
    # actuation outcome), "config" or the kind of the message. With ``cursor`` a replay re-creates the
    # core's inputs in the order the live core saw them, so a recording replays to the same decisions.
    trigger: str = ""
    cursor: Cursor = msgspec.field(default_factory=Cursor)
    # What actuation did: "" (not actuated: hold, hpa/dry-run mode, paused), "applied", "no_op", or why
    # it failed: "failed", "target_moved", "not_found", "refused" (the VA in the API does not allow it),
    # "fenced" (this replica's lease on the group's partition was lost or about to expire).
    outcome: str = ""
    # A step's decision is published once its outcome is known (``at``, ``trigger``, ``cursor`` are the
    # outcome's); ``chosen`` is the evaluation that chose the step, so a replay makes it at that instant.
    chosen: Evaluation | None = None
    # The identity of the scaler replica that decided ("" for a scaler without leases).
    replica: OptionalName = ""


# ---------------------------------------------------------------- request/reply


class FetchRequest(_Base, frozen=True, kw_only=True, tag="fetch.v1"):
    """Ask the fetcher for a snapshot of one VA; ``fresh`` bypasses its cache."""

    fresh: bool = False


TargetMessage = Target | TargetDeleted
MetricsMessage = MetricsSnapshot | MetricsDeleted
EventMessage = Invalidation | Decision | Ownership
AnyMessage = (
    Target | TargetDeleted | MetricsSnapshot | MetricsDeleted | Invalidation | Decision | Ownership | FetchRequest
)

KNOWN_KINDS: Final[frozenset[str]] = frozenset(
    str(t.__struct_config__.tag)
    for t in (Target, TargetDeleted, MetricsSnapshot, MetricsDeleted, Invalidation, Decision, Ownership, FetchRequest)
)


Rejection = Literal[
    "too_large",
    "too_deep",
    "malformed",
    "unknown_kind",
    "invalid_name",
    "invalid",
    "invalid_subject",
    "wrong_subject",
    "subject_mismatch",
]

_DETAIL_MAX: Final = 200


class MessageError(ValueError):
    """A payload that cannot be used. ``reason`` is a short label suitable for a metric; ``detail``
    says what was wrong in at most a couple of hundred characters (it may quote the payload)."""

    def __init__(self, reason: Rejection, detail: str) -> None:
        detail = detail if len(detail) <= _DETAIL_MAX else detail[:_DETAIL_MAX] + "…"
        super().__init__(f"{reason}: {detail}")
        self.reason: Rejection = reason
        self.detail = detail


class _Envelope(msgspec.Struct):
    kind: str | None = None


_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_encoder: Final = msgspec.json.Encoder()

M = TypeVar("M")


class Decoder(Generic[M]):
    """A typed decoder for one union; reuses msgspec's compiled decoder (hot path)."""

    __slots__ = ("_decoder", "accepts")

    def __init__(self, tp: type[M] | object, accepts: frozenset[str]) -> None:
        self._decoder: msgspec.json.Decoder[M] = msgspec.json.Decoder(tp)
        self.accepts = accepts

    def decode(self, data: bytes | memoryview) -> M:
        """The message in ``data``; raises :class:`MessageError` and nothing else, for any bytes."""
        _check_size(data)
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise _classify(data, exc, self.accepts) from None
        except msgspec.DecodeError as exc:
            raise MessageError("malformed", str(exc)) from None
        except RecursionError:
            raise MessageError("too_deep", "nested deeper than the decoder's recursion limit") from None
        except Exception as exc:  # a trust boundary: whatever else a decoder may raise is a bad payload
            raise MessageError("malformed", f"undecodable ({type(exc).__name__})") from None


def _check_size(data: bytes | memoryview) -> None:
    if len(data) > MAX_PAYLOAD:
        raise MessageError("too_large", f"{len(data)} bytes; the limit is {MAX_PAYLOAD}")


def _classify(data: bytes | memoryview, exc: msgspec.ValidationError, accepts: frozenset[str]) -> MessageError:
    # Only reached on failure, so the second decode costs nothing on the hot path.
    try:
        kind = _envelope_decoder.decode(data).kind
    except RecursionError:
        return MessageError("too_deep", "nested deeper than the decoder's recursion limit")
    except Exception:  # the first error is the one worth reporting
        return MessageError("malformed", str(exc))
    if kind is None:
        return MessageError("malformed", "payload has no 'kind' field")
    if kind not in accepts:
        return MessageError("unknown_kind", f"kind {kind[:40]!r} not accepted here (expected one of {sorted(accepts)})")
    text = str(exc)
    if text.endswith(("at `$.namespace`", "at `$.name`")):
        return MessageError("invalid_name", f"{kind}: {text}")
    return MessageError("invalid", f"{kind}: {text}")


def peek_kind(data: bytes | memoryview) -> str | None:
    """The ``kind`` of a payload without decoding the rest (None when it has none)."""
    _check_size(data)
    try:
        return _envelope_decoder.decode(data).kind
    except RecursionError:
        raise MessageError("too_deep", "nested deeper than the decoder's recursion limit") from None
    except Exception as exc:
        raise MessageError("malformed", str(exc)) from None


def _tags(*types: type[msgspec.Struct]) -> frozenset[str]:
    return frozenset(str(t.__struct_config__.tag) for t in types)


targets_decoder: Final = Decoder[TargetMessage](TargetMessage, _tags(Target, TargetDeleted))
metrics_decoder: Final = Decoder[MetricsMessage](MetricsMessage, _tags(MetricsSnapshot, MetricsDeleted))
events_decoder: Final = Decoder[EventMessage](EventMessage, _tags(Invalidation, Decision, Ownership))
fetch_decoder: Final = Decoder[FetchRequest](FetchRequest, _tags(FetchRequest))
any_decoder: Final = Decoder[AnyMessage](AnyMessage, KNOWN_KINDS)

KINDS_ON: Final[dict[subjects.SubjectKind, frozenset[str]]] = {
    subjects.SubjectKind.TARGETS: _tags(Target, TargetDeleted),
    subjects.SubjectKind.METRICS: _tags(MetricsSnapshot, MetricsDeleted),
    subjects.SubjectKind.INVALIDATE: _tags(Invalidation),
    subjects.SubjectKind.DECISIONS: _tags(Decision),
    # A request, and the snapshot that answers it (checked against the request's subject).
    subjects.SubjectKind.FETCH: _tags(FetchRequest, MetricsSnapshot),
    subjects.SubjectKind.OWNERS: _tags(Ownership),
}
"""The kinds each subject carries: anything else on it is rejected (``wrong_subject``)."""


def encode(message: msgspec.Struct) -> bytes:
    """The one encoder. Producers drop non-finite floats first (msgspec would write them as null)."""
    return _encoder.encode(message)


def is_finite_non_negative(value: float | None) -> TypeGuard[float]:
    """The one test of "a usable figure" (the wire's ``Figure`` rule, for values already in hand)."""
    return value is not None and math.isfinite(value) and value >= 0.0


def same_content(old: _Base | None, new: _Base | None) -> bool:
    """Equal except for ``at`` (when it was produced): a republished message with nothing new."""
    if old is None or new is None:
        return old is new
    return type(old) is type(new) and msgspec.structs.replace(old, at=new.at) == new


def kind_of(message: msgspec.Struct) -> str:
    return str(type(message).__struct_config__.tag)


def interned(target: Target) -> Target:
    """The same Target with its repeated strings shared: the namespace, model ID, accelerator, pod
    phases and scale target kind are the same for many VAs (``sys.intern``), and a scale target that
    names the VA itself shares the VA's name. A service keeps one Target per VA; decoded, each holds
    its own copies (about 450 bytes of a 2-pod Target; docs/benchmarks.md, "Memory per tracked VA")."""
    st = target.scale_target
    scale = ScaleTarget(
        kind=sys.intern(st.kind),
        name=target.name if st.name == target.name else st.name,
        api_version=sys.intern(st.api_version),
    )
    pods = tuple(
        PodRef(name=p.name, ready=p.ready, phase=sys.intern(p.phase), address=p.address) for p in target.pods
    )
    return msgspec.structs.replace(
        target,
        namespace=sys.intern(target.namespace),
        model_id=sys.intern(target.model_id),
        accelerator=sys.intern(target.accelerator),
        controller_instance=sys.intern(target.controller_instance),
        scale_target=scale,
        pods=pods,
    )
