"""A metrics snapshot digested once, on arrival: the valid figures of each replica, what was left out,
and the snapshot's place in time — bounded by the scaler's own clock.

Time: a snapshot cannot have been collected after it arrived, so its effective collection time is
``min(collected_at, received_at)``. A fetcher whose clock runs ahead therefore never makes a snapshot
look fresher than it is, nor later snapshots look "older" than it; when the stamp is more than
``max_skew`` ahead the digest says so (``skew``) and the core reports it. Ordering between snapshots
does not use clocks at all: the stream delivers them in order, and generations say what they describe.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Mapping
from typing import Final

import msgspec

from shared.doubles import ABSENT, doubles, figure
from shared.interning import Interner
from shared.messages import MetricsSnapshot, SnapshotStatus
from shared.messages import is_finite_non_negative as valid

# The core keeps one digest per VA: an immutable Struct the garbage collector does not track, its
# figures packed as doubles in one array (a float object is 24 bytes, a double 8), pod names shared
# with the VA's Target when the core passes them, one int per cache size (docs/benchmarks.md, "Memory
# per tracked VA"). The per-replica view (``ReplicaLoad``) is built when read.
_shared_size: Final[Interner[int]] = Interner(limit=1024)  # a fleet has a handful of cache sizes
_HEAD: Final = (
    8  # collected_at, skew, arrival_rate, avg_input_tokens, avg_output_tokens, gateway_queue, ttft, itl
)
_PER: Final = 5  # per replica: kv, queue, running, tokens_rate, itl


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
    pods: tuple[str, ...]  # the reporting replicas (valid KV-cache usage and waiting), in order
    excluded: tuple[str, ...]  # pods left out for missing or invalid values
    invalid_values: int  # NaN/inf/negative values seen here plus those the fetcher dropped
    figures: array[float]  # _HEAD figures of the snapshot, then _PER per reporting replica; NaN: absent
    sizes: int | tuple[int | None, ...] | None  # cache tokens: the same for every replica, or one each

    def age(self, now: float) -> float:
        return now - self.collected_at

    @property
    def collected_at(self) -> float:
        """Effective collection time: never later than its arrival."""
        return self.figures[0]

    @property
    def skew(self) -> float:
        """Seconds the wire stamp was ahead of the arrival (0 when not ahead)."""
        return self.figures[1]

    @property
    def arrival_rate(self) -> float | None:
        return figure(self.figures[2])

    @property
    def avg_input_tokens(self) -> float | None:
        return figure(self.figures[3])

    @property
    def avg_output_tokens(self) -> float | None:
        return figure(self.figures[4])

    @property
    def gateway_queue(self) -> float | None:
        return figure(self.figures[5])

    @property
    def ttft_seconds(self) -> float | None:
        """Average over the rate window."""
        return figure(self.figures[6])

    @property
    def itl_seconds(self) -> float | None:
        return figure(self.figures[7])

    @property
    def replicas(self) -> tuple[ReplicaLoad, ...]:
        f, sizes = self.figures, self.sizes
        each = sizes if isinstance(sizes, tuple) else (sizes,) * len(self.pods)
        loads = []
        at = _HEAD
        for i, pod in enumerate(self.pods):
            loads.append(
                ReplicaLoad(pod, f[at], f[at + 1], each[i], figure(f[at + 2]), figure(f[at + 3]), figure(f[at + 4]))
            )
            at += _PER
        return tuple(loads)

    @property
    def reporting(self) -> frozenset[str]:
        return frozenset(self.pods)


def _same(kept: tuple[str, ...], reporting: list[str]) -> bool:
    return len(kept) == len(reporting) and all(map(operator.is_, kept, reporting))


def _count_invalid(*values: float | None) -> int:
    return sum(1 for v in values if v is not None and not valid(v))


def _cache_tokens(blocks: int | None, block_size: int | None) -> int | None:
    if blocks is None or block_size is None or blocks <= 0 or block_size <= 0:
        return None
    return _shared_size(blocks * block_size)


def _figure(value: float | None) -> tuple[float | None, int]:
    """A traffic figure and whether it was invalid (invalid values count and read as absent)."""
    return (value, 0) if value is None or valid(value) else (None, 1)


def digest(
    snapshot: MetricsSnapshot,
    *,
    received_at: float,
    names: Mapping[str, str] | None = None,
    pods: tuple[str, ...] = (),
) -> Digest:
    """``names`` maps pod names to the strings to keep for them (the Target's), and ``pods`` is the
    Target's tuple of them, kept when every one reports in that order: a digest holds no copy of what
    its Target already holds."""
    reporting: list[str] = []
    sizes: list[int | None] = []
    per: list[float] = []
    excluded: list[str] = []
    invalid = snapshot.dropped_values
    for replica in snapshot.replicas:
        kv, queue = replica.kv_cache_usage, replica.waiting
        invalid += _count_invalid(kv, queue)
        if kv is not None and queue is not None and valid(kv) and valid(queue):
            reporting.append(replica.pod if names is None else names.get(replica.pod, replica.pod))
            sizes.append(_cache_tokens(replica.num_gpu_blocks, replica.block_size))
            per += (
                kv,
                queue,
                replica.running if valid(replica.running) else ABSENT,
                replica.generation_tokens_rate if valid(replica.generation_tokens_rate) else ABSENT,
                replica.itl_seconds if valid(replica.itl_seconds) else ABSENT,
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
    head = (
        min(stamped, received_at),
        max(0.0, stamped - received_at),
        rate,
        avg_in,
        avg_out,
        gateway,
        ttft,
        itl,
    )
    return Digest(
        generation=snapshot.deployment_generation,
        template_hash=snapshot.template_hash,
        status=snapshot.status,
        reason=snapshot.reason,
        pods=pods if _same(pods, reporting) else tuple(reporting),
        excluded=tuple(excluded),
        invalid_values=invalid + bad_rate + bad_in + bad_out + bad_gateway + bad_ttft + bad_itl,
        figures=doubles([*head, *per]),
        sizes=sizes[0] if sizes and all(s is sizes[0] for s in sizes) else (tuple(sizes) if sizes else None),
    )
