"""A cached snapshot in a smaller form than the message, rebuilt equal to it when read.

The fetcher's cache keeps one ``MetricsSnapshot`` per VA for as long as its TTL. As a message it is a
Struct per replica and a 24-byte float object per figure; packed, its figures are doubles in one array
(NaN for an absent one), its replicas' pod names one tuple, the cache sizes one shared tuple per
distinct pattern, and the namespace and model ID shared strings (docs/benchmarks.md, "Memory per
tracked VA"). :func:`unpack` gives back a snapshot equal to the one packed, field for field, with the
same types, so it encodes to the same bytes. A snapshot that would not come back so (a figure that is
not a float or None, or NaN) is not packed.
"""

from __future__ import annotations

import math
import sys
from array import array
from datetime import datetime
from typing import Final

import msgspec

from shared.doubles import doubles, figure
from shared.interning import Interner
from shared.messages import AllocationMetrics, MetricsSnapshot, ReplicaMetrics, SnapshotStatus

_ALLOCATION: Final = ("arrival_rate", "avg_input_tokens", "avg_output_tokens", "ttft_seconds", "itl_seconds", "gateway_queue")
_FIGURES: Final = ("kv_cache_usage", "waiting", "running", "generation_tokens_rate", "itl_seconds")
_shared_sizes: Final[Interner[tuple[tuple[int | None, int | None], ...]]] = Interner()  # one per pattern


class Packed(msgspec.Struct, frozen=True, gc=False):
    namespace: str
    name: str
    at: datetime
    model_id: str
    collected_at: datetime
    deployment_generation: int
    template_hash: str
    status: SnapshotStatus
    reason: str
    dropped_values: int
    pods: tuple[str, ...]
    sizes: tuple[tuple[int | None, int | None], ...]  # (num_gpu_blocks, block_size) per replica
    figures: array[float]  # the allocation's figures, then _FIGURES per replica; NaN: None


# Packing names every field: a field added to these messages must be added here (or it would be lost).
if (
    AllocationMetrics.__struct_fields__ != _ALLOCATION
    or set(ReplicaMetrics.__struct_fields__) != {"pod", "num_gpu_blocks", "block_size", *_FIGURES}
    or set(MetricsSnapshot.__struct_fields__)
    != set(Packed.__struct_fields__) - {"pods", "sizes", "figures"} | {"allocation", "replicas"}
):
    raise ImportError("services.fetcher.packing does not know every field of the metrics messages")



_FLOAT_OR_NONE: Final = frozenset((float, type(None)))


def pack(snapshot: MetricsSnapshot) -> Packed | None:
    """The snapshot packed, or None when it would not unpack to an equal one of the same types."""
    a = snapshot.allocation
    if type(snapshot) is not MetricsSnapshot or type(a) is not AllocationMetrics:
        return None
    values = [a.arrival_rate, a.avg_input_tokens, a.avg_output_tokens, a.ttft_seconds, a.itl_seconds, a.gateway_queue]
    for r in snapshot.replicas:
        if type(r) is not ReplicaMetrics:
            return None
        values += (r.kv_cache_usage, r.waiting, r.running, r.generation_tokens_rate, r.itl_seconds)
    # only floats and None, and no NaN (it would come back as None): a finite sum says so
    if not _FLOAT_OR_NONE.issuperset(map(type, values)) or not math.isfinite(
        sum(v for v in values if v is not None)
    ):
        return None
    sizes = tuple((r.num_gpu_blocks, r.block_size) for r in snapshot.replicas)
    shared = _shared_sizes(sizes)
    return Packed(
        namespace=sys.intern(snapshot.namespace),
        name=snapshot.name,
        at=snapshot.at,
        model_id=sys.intern(snapshot.model_id),
        collected_at=snapshot.collected_at,
        deployment_generation=snapshot.deployment_generation,
        template_hash=snapshot.template_hash,
        status=snapshot.status,
        reason=snapshot.reason,
        dropped_values=snapshot.dropped_values,
        pods=tuple(r.pod for r in snapshot.replicas),
        sizes=shared,
        figures=doubles(values),
    )


def unpack(packed: Packed) -> MetricsSnapshot:
    f = packed.figures
    n = len(_ALLOCATION)
    k = len(_FIGURES)
    replicas = tuple(
        ReplicaMetrics(
            pod=pod,
            kv_cache_usage=figure(f[n + k * i]),
            waiting=figure(f[n + k * i + 1]),
            running=figure(f[n + k * i + 2]),
            num_gpu_blocks=blocks,
            block_size=size,
            generation_tokens_rate=figure(f[n + k * i + 3]),
            itl_seconds=figure(f[n + k * i + 4]),
        )
        for i, (pod, (blocks, size)) in enumerate(zip(packed.pods, packed.sizes, strict=True))
    )
    return MetricsSnapshot(
        namespace=packed.namespace,
        name=packed.name,
        at=packed.at,
        model_id=packed.model_id,
        collected_at=packed.collected_at,
        deployment_generation=packed.deployment_generation,
        template_hash=packed.template_hash,
        status=packed.status,
        reason=packed.reason,
        allocation=AllocationMetrics(**{field: figure(f[i]) for i, field in enumerate(_ALLOCATION)}),
        replicas=replicas,
        dropped_values=packed.dropped_values,
    )
