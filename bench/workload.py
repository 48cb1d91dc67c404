"""Synthetic VAs as the watcher would announce them: groups of 1-4 variants per model, 1-4 pods each.

Deterministic: the same ``n`` always gives the same names, groups and pod counts, so every mode and
every benchmark of a run sees the same installation. Groups cycle through sizes 1, 2, 3, 4 (2.5 VAs per
model on average); pods per VA cycle 1..4; about 25 VAs per namespace.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

from shared import messages

GROUPS_PER_NAMESPACE = 10


@dataclass(frozen=True)
class VA:
    namespace: str
    name: str
    model_id: str
    cost: float
    pods: int  # spec replicas


def vas(n: int, *, prefix: str = "bench", group_sizes: tuple[int, ...] = (1, 2, 3, 4)) -> list[VA]:
    out: list[VA] = []
    group = 0
    while len(out) < n:
        size = group_sizes[group % len(group_sizes)]
        ns = f"{prefix}-{n}-{group // GROUPS_PER_NAMESPACE}"
        for v in range(size):
            if len(out) == n:
                break
            i = len(out)
            out.append(VA(ns, f"va-{i:05d}", f"org/model-{group:05d}", 10.0 * (v + 1), i % 4 + 1))
        group += 1
    return out


def pod_names(va: VA) -> list[str]:
    return [f"{va.name}-{j}" for j in range(va.pods)]


def target(
    va: VA,
    *,
    at: datetime | None = None,
    generation: int = 1,
    replicas: int | None = None,
    addresses: dict[str, str] | None = None,
    max_replicas: int = 1000,
) -> messages.Target:
    spec = va.pods if replicas is None else replicas
    names = pod_names(va) if replicas is None else [f"{va.name}-{j}" for j in range(spec)]
    return messages.Target(
        namespace=va.namespace,
        name=va.name,
        at=at or messages.utcnow(),
        model_id=va.model_id,
        variant_cost=va.cost,
        accelerator="A100",
        min_replicas=1,
        max_replicas=max_replicas,
        scale_target=messages.ScaleTarget(name=va.name),
        resolved=True,
        deployment_generation=generation,
        spec_replicas=spec,
        ready_replicas=spec,
        updated_replicas=spec,
        available_replicas=spec,
        pods=tuple(
            messages.PodRef(name=p, ready=True, phase="Running", address=(addresses or {}).get(p, ""))
            for p in names
        ),
    )


def snapshot(
    va: VA,
    *,
    collected_at: float,
    kv: list[float],
    waiting: float = 0.0,
    generation: int = 1,
    rate: float = 5.0,
) -> messages.MetricsSnapshot:
    at = datetime.fromtimestamp(collected_at, UTC)
    return messages.MetricsSnapshot(
        namespace=va.namespace,
        name=va.name,
        at=at,
        model_id=va.model_id,
        collected_at=at,
        deployment_generation=generation,
        allocation=messages.AllocationMetrics(
            arrival_rate=rate,
            avg_input_tokens=512.0,
            avg_output_tokens=128.0,
            ttft_seconds=0.08,
            itl_seconds=0.02,
        ),
        replicas=tuple(
            messages.ReplicaMetrics(
                pod=f"{va.name}-{j}",
                kv_cache_usage=k,
                waiting=waiting,
                running=8.0,
                num_gpu_blocks=1024,
                block_size=16,
            )
            for j, k in enumerate(kv)
        ),
    )


def calm_kv(rng: random.Random, pods: int) -> list[float]:
    """Loads that neither trigger a scale-up (spare KV >= 0.12) nor make a scale-down safe."""
    return [round(rng.uniform(0.60, 0.68), 3) for _ in range(pods)]


def hot_kv(pods: int) -> list[float]:
    return [0.95] * pods
