"""A metrics snapshot digested once, on arrival: the valid figures of each replica, what was left out,
and the snapshot's place in time — bounded by the scaler's own clock.

Time: a snapshot cannot have been collected after it arrived, so its effective collection time is
``min(collected_at, received_at)``. A fetcher whose clock runs ahead therefore never makes a snapshot
look fresher than it is, nor later snapshots look "older" than it; when the stamp is more than
``max_skew`` ahead the digest says so (``skew``) and the core reports it. Ordering between snapshots
does not use clocks at all: the stream delivers them in order, and generations say what they describe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from shared.messages import MetricsSnapshot, SnapshotStatus
from shared.messages import is_finite_non_negative as valid

# The core keeps one digest per VA: immutable Structs the garbage collector does not track (they hold
# only strings, numbers and a tuple of each other), pod names shared with the VA's Target when the
# core passes them, and one int per cache size (docs/benchmarks.md, "Memory per tracked VA").
_SIZES: Final[dict[int, int]] = {}
_MAX_SIZES: Final = 1024  # distinct cache sizes remembered (a fleet has a handful)


class ReplicaLoad(msgspec.Struct, frozen=True, gc=False):
    """One reporting replica with valid KV-cache usage (0-1) and waiting requests."""

    pod: str
    kv: float
    queue: float
    cache_tokens: int | None  # num_gpu_blocks * block_size, when the server reports it
    running: float | None = None  # requests in its batch, when reported (and valid)
    tokens_rate: float | None = None  # output tokens per second over the rate window
    itl: float | None = None  # its average inter-token latency over the rate window


class Digest(msgspec.Struct, frozen=True, gc=False):
    generation: int
    template_hash: str
    status: SnapshotStatus
    reason: str
    collected_at: float  # effective: never later than its arrival
    skew: float  # seconds the wire stamp was ahead of the arrival (0 when not ahead)
    replicas: tuple[ReplicaLoad, ...]
    excluded: tuple[str, ...]  # pods left out for missing or invalid values
    invalid_values: int  # NaN/inf/negative values seen here plus those the fetcher dropped
    arrival_rate: float | None
    avg_input_tokens: float | None
    avg_output_tokens: float | None
    gateway_queue: float | None
    ttft_seconds: float | None = None  # average over the rate window
    itl_seconds: float | None = None

    def age(self, now: float) -> float:
        return now - self.collected_at

    @property
    def reporting(self) -> frozenset[str]:
        return frozenset(r.pod for r in self.replicas)


def _count_invalid(*values: float | None) -> int:
    return sum(1 for v in values if v is not None and not valid(v))


def _cache_tokens(blocks: int | None, block_size: int | None) -> int | None:
    if blocks is None or block_size is None or blocks <= 0 or block_size <= 0:
        return None
    tokens = blocks * block_size
    shared = _SIZES.get(tokens)
    if shared is None and len(_SIZES) < _MAX_SIZES:
        shared = _SIZES[tokens] = tokens
    return tokens if shared is None else shared


def _figure(value: float | None) -> tuple[float | None, int]:
    """A traffic figure and whether it was invalid (invalid values count and read as absent)."""
    return (value, 0) if value is None or valid(value) else (None, 1)


def digest(snapshot: MetricsSnapshot, *, received_at: float, names: Mapping[str, str] | None = None) -> Digest:
    """``names`` maps pod names to the strings to keep for them (the Target's), so a digest holds no
    copy of what its Target already holds."""
    loads: list[ReplicaLoad] = []
    excluded: list[str] = []
    invalid = snapshot.dropped_values
    for replica in snapshot.replicas:
        kv, queue = replica.kv_cache_usage, replica.waiting
        invalid += _count_invalid(kv, queue)
        if kv is not None and queue is not None and valid(kv) and valid(queue):
            loads.append(
                ReplicaLoad(
                    pod=replica.pod if names is None else names.get(replica.pod, replica.pod),
                    kv=kv,
                    queue=queue,
                    cache_tokens=_cache_tokens(replica.num_gpu_blocks, replica.block_size),
                    running=replica.running if valid(replica.running) else None,
                    tokens_rate=replica.generation_tokens_rate if valid(replica.generation_tokens_rate) else None,
                    itl=replica.itl_seconds if valid(replica.itl_seconds) else None,
                )
            )
        else:
            excluded.append(replica.pod)
    allocation = snapshot.allocation
    rate, bad_rate = _figure(allocation.arrival_rate)
    avg_in, bad_in = _figure(allocation.avg_input_tokens)
    avg_out, bad_out = _figure(allocation.avg_output_tokens)
    gateway, bad_gateway = _figure(allocation.gateway_queue)
    ttft, bad_ttft = _figure(allocation.ttft_seconds)
    itl, bad_itl = _figure(allocation.itl_seconds)
    stamped = snapshot.collected_at.timestamp()
    return Digest(
        generation=snapshot.deployment_generation,
        template_hash=snapshot.template_hash,
        status=snapshot.status,
        reason=snapshot.reason,
        collected_at=min(stamped, received_at),
        skew=max(0.0, stamped - received_at),
        replicas=tuple(loads),
        excluded=tuple(excluded),
        invalid_values=invalid + bad_rate + bad_in + bad_out + bad_gateway + bad_ttft + bad_itl,
        arrival_rate=rate,
        avg_input_tokens=avg_in,
        avg_output_tokens=avg_out,
        gateway_queue=gateway,
        ttft_seconds=ttft,
        itl_seconds=itl,
    )
