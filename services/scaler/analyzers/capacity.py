"""V2: token-capacity analysis, WVA's default since v0.9 (docs/algorithms.md, "Token-capacity analysis").

It reasons in tokens: demand is what the replicas hold in their KV caches plus what waits in their
queues and in front of them (the gateway's queue), capacity is what a replica can hold before it
saturates — memory-bound (``k1``, a share of its cache) or compute-bound (``k2``, learned from the
replicas that were seen saturated with a queue). Starting pods count as supply, so a burst is met by
one step sized for it, and another while pods warm up only if demand still exceeds what is coming.

Memory that outlives one evaluation (per model group): the last ``K2_MEMORY`` compute-saturated
token counts per variant, each variant's last known per-replica capacity, and the model's last known
request shape. It is updated when a snapshot arrives (``observe``), never by an evaluation, so it is
a function of the snapshots received, in order — which is what a replay feeds.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from services.scaler.analyzers import GroupView, Recommendation, sizing
from services.scaler.analyzers.saturation import EPSILON, SaturationAnalyzer
from services.scaler.digest import Digest
from services.scaler.scaling_config import ScalingConfig
from shared.interning import Interner
from shared.messages import CapacityFigures, DecisionNumbers

K2_MEMORY: Final = 10
DEFAULT_TOKENS_PER_REQUEST: Final = 1024.0


@dataclass(slots=True)
class CapacityMemory:
    """What V2 remembers of a model group between snapshots."""

    # variant -> compute-saturated tokens in use; made with the first (most groups never see one)
    k2: dict[str, deque[float]] | None = None
    capacity: dict[str, tuple[float, str]] = field(default_factory=dict)  # variant -> (per-replica, source)
    cache_tokens: dict[str, int] = field(default_factory=dict)  # variant -> its replicas' cache size T
    tokens_per_request: float | None = None  # the model's last known avgIn + avgOut

    def observe(self, variant: str, metrics: Digest, config: ScalingConfig) -> None:
        """Learn from a snapshot of ``variant``: compute-saturated replicas, cache size, request shape,
        and the variant's per-replica capacity (docs/algorithms.md, V2 step 2)."""
        shape = _shape(metrics)
        if shape is not None:
            self.tokens_per_request = shape
        replicas = metrics.replicas  # built when read: once
        for replica in replicas:
            if replica.cache_tokens is not None and replica.queue >= config.queue_length_threshold - EPSILON:
                if self.k2 is None:
                    self.k2 = {}
                self.k2.setdefault(variant, deque(maxlen=K2_MEMORY)).append(replica.kv * replica.cache_tokens)
        remembered = None if self.k2 is None else self.k2.get(variant)
        learned = statistics.fmean(remembered) if remembered else None
        capacities: list[float] = []
        compute_bound = True
        for replica in replicas:
            if replica.cache_tokens is None:
                continue
            self.cache_tokens[variant] = replica.cache_tokens
            k1 = replica.cache_tokens * config.kv_cache_threshold
            if replica.queue >= config.queue_length_threshold - EPSILON:
                k2 = replica.kv * replica.cache_tokens
            else:
                k2 = learned if learned is not None else k1
            capacities.append(min(k1, k2))
            compute_bound = compute_bound and k2 < k1
        if capacities:
            self.capacity[variant] = _shared((statistics.median(capacities), "k2" if compute_bound else "k1"))
        elif variant in self.capacity:
            self.capacity[variant] = _shared((self.capacity[variant][0], "memory"))


# One object for equal capacities: variants on the same accelerator with the same cache size have the
# same memory-bound capacity. 0.0 and -0.0 are equal, yet each is kept as it came.
_shared: Final[Interner[tuple[float, str]]] = Interner(keep=lambda capacity: not capacity[0])


def _shape(metrics: Digest) -> float | None:
    avg_in, avg_out = metrics.avg_input_tokens, metrics.avg_output_tokens  # each unpacked when read
    if avg_in is None or avg_out is None:
        return None
    shape = avg_in + avg_out
    return shape if shape > 0 else None


class CapacityAnalyzer:
    """WVA's V2 rules as an :class:`~services.scaler.analyzers.Analyzer` (with a memory)."""

    name = "v2"

    def __init__(self, memory: CapacityMemory) -> None:
        self.memory = memory

    def recommend(self, group: GroupView) -> Recommendation:
        config = group.config
        shape = self._tokens_per_request(group)
        variants = self._capacities(group)
        if not any(v.capacity for v in variants):
            # Without vllm:cache_config_info nothing is known in tokens: V1 decides, and says so.
            fallback = SaturationAnalyzer().recommend(group)
            return Recommendation(
                desired=fallback.desired,
                reason=fallback.reason,
                detail=f"no token capacity known (vllm:cache_config_info missing): V1 rules; {fallback.detail}",
                numbers=fallback.numbers,
            )
        demand = sum(r.kv * (r.cache_tokens or 0) + r.queue * shape for v in group.variants for r in v.metrics.replicas)
        gateway = max((v.metrics.gateway_queue or 0.0) for v in group.variants)
        demand += gateway * shape
        b = sizing.balance(variants, demand, up=config.scale_up_threshold, down=config.scale_down_boundary)
        numbers = DecisionNumbers(
            replicas_total=sum(v.view.expected for v in variants),
            demand=b.demand,
            supply=b.supply,
            anticipated=b.anticipated,
            required=b.required,
            spare=b.spare,
            tokens_per_request=shape,
            gateway_queue=gateway,
            capacities=tuple(
                CapacityFigures(variant=v.view.name, capacity=v.capacity, source=v.source) for v in variants
            ),
        )
        figures = (
            f"demand {b.demand:,.0f} tokens (gateway queue {gateway:g}), supply {b.supply:,.0f}, "
            f"anticipated {b.anticipated:,.0f}, required {b.required:,.0f}, spare {b.spare:,.0f}"
        )
        return sizing.recommend(variants, b, max_step=config.max_scale_up_step, figures=figures, numbers=numbers)

    # ------------------------------------------------------------------ inputs

    def _tokens_per_request(self, group: GroupView) -> float:
        """The model's average prompt + output tokens now, else the last known, else 1,024."""
        for v in group.variants:
            shape = _shape(v.metrics)
            if shape is not None:
                return shape
        return self.memory.tokens_per_request or DEFAULT_TOKENS_PER_REQUEST

    def _capacities(self, group: GroupView) -> list[sizing.Sized]:
        """Each variant's per-replica capacity as its snapshots taught it (its replicas now, else the
        last known); a variant that never reported one is of unknown capacity. (A cache size ``T`` is
        only ever learned from a variant's own replicas, together with its capacity, so the rule
        "borrow the capacity of a variant with the same T" never finds more than this.)"""
        return [
            sizing.Sized(v, *self.memory.capacity[v.name]) if v.name in self.memory.capacity else sizing.Sized(v, None, "unknown")
            for v in group.variants
        ]


