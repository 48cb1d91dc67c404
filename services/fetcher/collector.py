"""The ``MetricsCollector`` protocol, its result types, and the pure assembly of snapshots.

A backend (Prometheus, direct scrape, …) only has to produce :class:`PodSample` values: what one pod
reported for each metric. :func:`assemble` turns the samples of a VA's member pods into the
``MetricsSnapshot`` that goes on the wire — one place that decides status, drops bad values and
computes averages, whatever the backend.

Exceptions::

    Exception
    └── CollectorError          a backend could not produce data (Prometheus down, bad query, a pod
        │                       that cannot be read); ``str()`` is the short reason put in a snapshot,
        │                       ``.detail`` what the log gets
        ├── QueryError          one query failed for good (after retries); ``.transient`` says why
        └── ScrapeFailed        (services.fetcher.scrape) one pod could not be scraped
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NewType, Protocol

from shared.messages import (
    AllocationMetrics,
    MetricsSnapshot,
    ReplicaMetrics,
    SnapshotStatus,
    Target,
    VAKey,
    is_finite_non_negative,
    utcnow,
)

PodKey = NewType("PodKey", tuple[str, str])  # (namespace, pod name)


def pod_key(namespace: str, pod: str) -> PodKey:
    return PodKey((namespace, pod))


class CollectorError(Exception):
    """A backend could not collect. The message is the reason users see in a VA's status: short,
    generic and secret-free; ``detail`` (possibly empty) is for the fetcher's log only."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class QueryError(CollectorError):
    def __init__(self, message: str, *, transient: bool, detail: str = "") -> None:
        super().__init__(message, detail=detail)
        self.transient = transient


# The per-pod figures every backend produces. Rates are per second over the rate window; histogram
# figures are the rates of their ``_sum`` and ``_count`` series, so averages over many pods weigh each
# pod by its traffic. Request lengths are those of finished requests (``vllm:request_prompt_tokens``
# and ``vllm:request_generation_tokens``, observed when a request finishes, as
# ``vllm:request_success_total`` counts it): tokens processed per second include requests still
# running, so over finished requests they overstate the lengths while a pod fills up (a new pod: three
# times as long in the sandbox's ci scenario).
GAUGES: Final = ("kv_cache_usage", "waiting", "running")
RATES: Final = (
    "request_rate",
    "request_prompt_tokens_rate",
    "request_generation_tokens_rate",
    "generation_tokens_rate",
    "ttft_sum_rate",
    "ttft_count_rate",
    "itl_sum_rate",
    "itl_count_rate",
)
FIELDS: Final = GAUGES + RATES


@dataclass(slots=True)
class PodSample:
    """What one pod reported; ``None`` where the backend had no series for it."""

    kv_cache_usage: float | None = None
    waiting: float | None = None
    running: float | None = None
    request_rate: float | None = None
    request_prompt_tokens_rate: float | None = None  # prompt tokens of the requests that finished
    request_generation_tokens_rate: float | None = None  # output tokens of the requests that finished
    generation_tokens_rate: float | None = None  # tokens generated, running requests' included
    ttft_sum_rate: float | None = None
    ttft_count_rate: float | None = None
    itl_sum_rate: float | None = None
    itl_count_rate: float | None = None
    num_gpu_blocks: int | None = None
    block_size: int | None = None

    def merge(self, name: str, value: float, *, how: str) -> None:
        """Combine a second series for the same pod (e.g. two ``model_name`` values, LoRA adapters)."""
        old = getattr(self, name)
        if old is None or not math.isfinite(old) or not math.isfinite(value):
            # Keep a bad value visible so assemble() drops and counts it.
            setattr(self, name, value if old is None or math.isfinite(old) else old)
        elif how == "max":
            setattr(self, name, max(old, value))
        else:
            setattr(self, name, old + value)


Samples = Mapping[PodKey, PodSample]


def count_label(text: object) -> int | None:
    """A label that holds a count (``num_gpu_blocks``); None unless it is a non-negative integer."""
    try:
        value = int(str(text))
    except ValueError:
        return None
    return value if 0 <= value < 2**63 else None


@dataclass(frozen=True, slots=True)
class Collection:
    """What one ``collect`` call produced: a snapshot per requested VA and what it cost."""

    snapshots: dict[VAKey, MetricsSnapshot]
    queries: int
    failed: int = 0  # query groups (Prometheus) or pods (scrape) that could not be read
    dropped_values: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)


class MetricsCollector(Protocol):
    """A metrics backend: a targeted ``allocation_metrics`` for one VA (the seed's operation; on-demand
    fetches and invalidations) and a batched ``collect`` for the background cycle."""

    name: str
    queries: int  # queries (or scrapes) sent since creation; the cycle log reports the difference

    async def allocation_metrics(self, target: Target) -> MetricsSnapshot:
        """A fresh snapshot of one VA (targeted query; on-demand fetches and invalidations)."""
        ...

    async def collect(self, targets: Sequence[Target]) -> Collection:
        """Snapshots for many VAs at once; query count does not grow with the number of VAs."""
        ...

    async def aclose(self) -> None: ...


# ------------------------------------------------------------------------------------ assembly


def _clean(value: float | None) -> tuple[float | None, bool]:
    """``(value, dropped)``: NaN, ±inf and negative values become ``None`` and count as dropped."""
    if value is None:
        return None, False
    if is_finite_non_negative(value):
        return value, False
    return None, True


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0.0 else None


def _snapshot(target: Target, collected_at: datetime, **fields: Any) -> MetricsSnapshot:
    """A snapshot of ``target`` as the fetcher saw it at ``collected_at``: it names the generation and
    template hash of the very Target it was collected for, so the scaler can order it."""
    return MetricsSnapshot(
        namespace=target.namespace,
        name=target.name,
        at=collected_at,
        model_id=target.model_id,
        collected_at=collected_at,
        deployment_generation=target.deployment_generation,
        template_hash=target.template_hash,
        **fields,
    )


def unavailable(of: Target | VAKey, *, reason: str, collected_at: datetime | None = None) -> MetricsSnapshot:
    """The one builder of ``unavailable`` snapshots: of a tracked VA (its Target), or of one the fetcher
    does not track (its key). ``reason`` is shown in the VA's status: short, and never a secret."""
    at = collected_at or utcnow()
    if isinstance(of, Target):
        return _snapshot(of, at, status="unavailable", reason=reason)
    return MetricsSnapshot(namespace=of[0], name=of[1], at=at, collected_at=at, status="unavailable", reason=reason)


def assemble(
    target: Target,
    samples: Samples,
    *,
    collected_at: datetime,
    missing_reason: str = "",
    notes: Sequence[str] = (),
    gateway_queue: float | None = None,
) -> tuple[MetricsSnapshot, dict[str, int]]:
    """The snapshot of one VA from the samples of its member pods, and the dropped values by field.

    Pods not in ``target.pods`` are ignored: that is how deleted pods stop skewing decisions.
    Status: ``ok`` when every member pod has every saturation gauge and the traffic series;
    ``partial`` when some are missing (the reason says which, followed by the caller's ``notes``, e.g.
    why a pod could not be read); the caller makes ``unavailable``.
    """
    dropped: dict[str, int] = {}
    replicas: list[ReplicaMetrics] = []
    missing_pods: list[str] = []
    totals = dict.fromkeys(RATES, 0.0)
    have_rate = dict.fromkeys(RATES, False)
    for pod in target.pods:
        sample = samples.get(pod_key(target.namespace, pod.name))
        if sample is None:
            missing_pods.append(pod.name)
            continue
        values: dict[str, float | None] = {}
        for name in FIELDS:
            value, bad = _clean(getattr(sample, name))
            if bad:
                dropped[name] = dropped.get(name, 0) + 1
            values[name] = value
        if any(values[g] is None for g in GAUGES):
            missing_pods.append(pod.name)
        for name in RATES:
            v = values[name]
            if v is not None:
                totals[name] += v
                have_rate[name] = True
        replicas.append(
            ReplicaMetrics(
                pod=pod.name,
                kv_cache_usage=values["kv_cache_usage"],
                waiting=values["waiting"],
                running=values["running"],
                num_gpu_blocks=sample.num_gpu_blocks,
                block_size=sample.block_size,
                generation_tokens_rate=values["generation_tokens_rate"],
                itl_seconds=_ratio(values["itl_sum_rate"] or 0.0, values["itl_count_rate"] or 0.0),
            )
        )
    requests = totals["request_rate"] if have_rate["request_rate"] else None
    gateway, bad_gateway = _clean(gateway_queue)
    if bad_gateway:
        dropped["gateway_queue"] = 1
    allocation = AllocationMetrics(
        arrival_rate=requests,
        avg_input_tokens=_ratio(totals["request_prompt_tokens_rate"], totals["request_rate"])
        if have_rate["request_prompt_tokens_rate"]
        else None,
        avg_output_tokens=_ratio(totals["request_generation_tokens_rate"], totals["request_rate"])
        if have_rate["request_generation_tokens_rate"]
        else None,
        ttft_seconds=_ratio(totals["ttft_sum_rate"], totals["ttft_count_rate"]) if have_rate["ttft_count_rate"] else None,
        itl_seconds=_ratio(totals["itl_sum_rate"], totals["itl_count_rate"]) if have_rate["itl_count_rate"] else None,
        gateway_queue=gateway,
    )
    reasons: list[str] = []
    if missing_pods:
        reasons.append(f"no saturation metrics for {len(missing_pods)} of {len(target.pods)} pods ({', '.join(sorted(missing_pods))})")
    if target.pods and not missing_pods and requests is None:
        reasons.append(missing_reason or "no request-rate series")
    if dropped:
        reasons.append(f"dropped {sum(dropped.values())} non-finite or negative values")
    reasons.extend(notes)
    status: SnapshotStatus = "partial" if missing_pods or (target.pods and requests is None) else "ok"
    snapshot = _snapshot(
        target,
        collected_at,
        status=status,
        reason="; ".join(reasons) if reasons else ("no pods" if not target.pods else ""),
        allocation=allocation,
        replicas=tuple(replicas),
        dropped_values=sum(dropped.values()),
    )
    return snapshot, dropped

