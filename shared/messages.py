"""Wire messages: every payload on every wva subject (docs/design.md §3).

Each message is a frozen, keyword-only ``msgspec.Struct`` tagged by a ``kind`` field that carries a
version (``"metrics.v1"``). A stream carries a tagged union, and each union has one typed decoder.

Evolution: adding a field *with a default* is compatible; anything else is a new kind version, and
consumers keep decoding the old one until no producer sends it. Unknown fields are ignored.

Exceptions::

    ValueError
    └── MessageError           one well-defined error for anything that cannot be decoded;
                               .reason is "malformed" (not JSON / wrong shape), "unknown_kind",
                               or "invalid" (a known kind whose fields do not validate)

Consumers catch :class:`MessageError`, log it with the subject, count it with
:func:`shared.observability.count_rejected`, and go on.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Final, Generic, Literal, NewType, TypeVar

import msgspec

SnapshotStatus = Literal["ok", "partial", "unavailable"]
InvalidationReason = Literal["template_changed", "replicas_changed", "target_changed", "va_deleted", "relist"]
ScalerMode = Literal["scale", "hpa", "dry-run"]

INVALIDATION_REASONS: Final[tuple[str, ...]] = (
    "template_changed",
    "replicas_changed",
    "target_changed",
    "va_deleted",
    "relist",
)


VAKey = NewType("VAKey", tuple[str, str])
"""(namespace, name) of a VariantAutoscaling: how every service keys its per-VA state."""


def va_key(namespace: str, name: str) -> VAKey:
    return VAKey((namespace, name))


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Base(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", omit_defaults=False):
    """Every message names its VA and when it was produced (UTC)."""

    namespace: str
    name: str
    at: datetime


# ---------------------------------------------------------------- targets (watcher -> all)


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """Something wrong with a VA's spec that the scaler reports in its conditions."""

    field: str
    message: str


class ScaleTarget(msgspec.Struct, frozen=True, kw_only=True):
    kind: str = "Deployment"
    name: str = ""
    api_version: str = "apps/v1"


class PodRef(msgspec.Struct, frozen=True, kw_only=True):
    """A pod that currently belongs to the VA's Deployment."""

    name: str
    ready: bool = False
    phase: str = ""
    address: str = ""  # host:port of its metrics endpoint, for the scrape collector; may be empty


class Target(_Base, frozen=True, kw_only=True, tag="target.v1"):
    """Everything the pipeline knows about one VA and the Deployment behind it."""

    model_id: str = ""
    variant_cost: float = 10.0
    accelerator: str = ""
    min_replicas: int = 1
    max_replicas: int | None = None
    scale_target: ScaleTarget = msgspec.field(default_factory=ScaleTarget)
    resolved: bool = False  # the scale target exists
    deployment_generation: int = 0
    template_hash: str = ""
    spec_replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    pods: tuple[PodRef, ...] = ()
    va_generation: int = 0
    paused: bool = False
    dry_run: bool = False
    controller_instance: str = ""
    problems: tuple[Problem, ...] = ()


class TargetDeleted(_Base, frozen=True, kw_only=True, tag="target_deleted.v1"):
    """Tombstone: the VA is gone."""


# ---------------------------------------------------------------- metrics (fetcher -> scaler)


class AllocationMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Per-VA traffic figures; ``None`` where the backend had no data."""

    arrival_rate: float | None = None  # requests per second
    avg_input_tokens: float | None = None
    avg_output_tokens: float | None = None
    ttft_seconds: float | None = None  # average time to first token
    itl_seconds: float | None = None  # average inter-token latency
    # Requests of the model waiting in front of its replicas (the inference gateway's flow-control
    # queue), the same on every VA of the model; None where no gateway reports it.
    gateway_queue: float | None = None


class ReplicaMetrics(msgspec.Struct, frozen=True, kw_only=True, array_like=False):
    """Saturation figures of one pod."""

    pod: str
    kv_cache_usage: float | None = None  # 0..1
    waiting: float | None = None
    running: float | None = None
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    # Over the rate window: the output tokens it generated per second and its average inter-token
    # latency (what the SLO analyzer learns a replica's capacity from, pod by pod).
    generation_tokens_rate: float | None = None
    itl_seconds: float | None = None


class MetricsSnapshot(_Base, frozen=True, kw_only=True, tag="metrics.v1"):
    model_id: str = ""
    collected_at: datetime
    deployment_generation: int = 0  # what the fetcher believed current when collecting
    template_hash: str = ""
    status: SnapshotStatus = "ok"
    reason: str = ""
    allocation: AllocationMetrics = msgspec.field(default_factory=AllocationMetrics)
    replicas: tuple[ReplicaMetrics, ...] = ()
    dropped_values: int = 0  # NaN/inf/negative values removed before publishing


class MetricsDeleted(_Base, frozen=True, kw_only=True, tag="metrics_deleted.v1"):
    """Tombstone on the metrics subject of a deleted VA."""


# ---------------------------------------------------------------- events


class Invalidation(_Base, frozen=True, kw_only=True, tag="invalidation.v1"):
    reason: InvalidationReason
    deployment_generation: int = 0
    template_hash: str = ""


class CapacityFigures(msgspec.Struct, frozen=True, kw_only=True):
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


class DecisionNumbers(msgspec.Struct, frozen=True, kw_only=True):
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


class Cursor(msgspec.Struct, frozen=True, kw_only=True):
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


class Decision(_Base, frozen=True, kw_only=True, tag="decision.v1"):
    model_id: str = ""
    accelerator: str = ""
    current: int
    desired: int
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
    # it failed: "failed", "target_moved", "not_found", "refused" (the VA in the API does not allow it).
    outcome: str = ""


# ---------------------------------------------------------------- request/reply


class FetchRequest(_Base, frozen=True, kw_only=True, tag="fetch.v1"):
    """Ask the fetcher for a snapshot of one VA; ``fresh`` bypasses its cache."""

    fresh: bool = False


TargetMessage = Target | TargetDeleted
MetricsMessage = MetricsSnapshot | MetricsDeleted
EventMessage = Invalidation | Decision
AnyMessage = Target | TargetDeleted | MetricsSnapshot | MetricsDeleted | Invalidation | Decision | FetchRequest

KNOWN_KINDS: Final[frozenset[str]] = frozenset(
    str(t.__struct_config__.tag)
    for t in (Target, TargetDeleted, MetricsSnapshot, MetricsDeleted, Invalidation, Decision, FetchRequest)
)


class MessageError(ValueError):
    """A payload that cannot be decoded. ``reason`` is a short label suitable for a metric."""

    def __init__(self, reason: Literal["malformed", "unknown_kind", "invalid"], detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
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
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise _classify(data, exc, self.accepts) from None
        except msgspec.DecodeError as exc:
            raise MessageError("malformed", str(exc)) from None


def _classify(data: bytes | memoryview, exc: Exception, accepts: frozenset[str]) -> MessageError:
    # Only reached on failure, so the second decode costs nothing on the hot path.
    try:
        kind = _envelope_decoder.decode(data).kind
    except msgspec.MsgspecError:
        return MessageError("malformed", str(exc))
    if kind is None:
        return MessageError("malformed", "payload has no 'kind' field")
    if kind not in accepts:
        return MessageError("unknown_kind", f"kind {kind!r} not accepted here (expected one of {sorted(accepts)})")
    return MessageError("invalid", f"{kind}: {exc}")


def peek_kind(data: bytes | memoryview) -> str | None:
    """The ``kind`` of a payload without decoding the rest (None when it has none)."""
    try:
        return _envelope_decoder.decode(data).kind
    except msgspec.MsgspecError as exc:
        raise MessageError("malformed", str(exc)) from None


def _tags(*types: type[msgspec.Struct]) -> frozenset[str]:
    return frozenset(str(t.__struct_config__.tag) for t in types)


targets_decoder: Final = Decoder[TargetMessage](TargetMessage, _tags(Target, TargetDeleted))
metrics_decoder: Final = Decoder[MetricsMessage](MetricsMessage, _tags(MetricsSnapshot, MetricsDeleted))
events_decoder: Final = Decoder[EventMessage](EventMessage, _tags(Invalidation, Decision))
fetch_decoder: Final = Decoder[FetchRequest](FetchRequest, _tags(FetchRequest))
any_decoder: Final = Decoder[AnyMessage](AnyMessage, KNOWN_KINDS)


def encode(message: msgspec.Struct) -> bytes:
    """The one encoder. Producers drop non-finite floats first (msgspec would write them as null)."""
    return _encoder.encode(message)


def is_finite_non_negative(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0.0


def kind_of(message: msgspec.Struct) -> str:
    return str(type(message).__struct_config__.tag)
