"""The scrape backend: read each pod's ``/metrics`` directly (Prometheus text format), no Prometheus.

For installations without Prometheus, and the sandbox without the binary. Pod addresses come from the
targets (``PodRef.address``). Gauges are read as they are; counters (and histogram ``_sum``/``_count``)
become rates from successive scrapes of the same pod: the rate is taken between the current scrape and
the oldest one kept within the rate window (a counter that went down is a restart: its new value is
the increase). The first scrape of a pod has no rates yet, so its VA is ``partial`` until the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from services.fetcher import telemetry
from services.fetcher.collector import (
    RATES,
    Collection,
    CollectorError,
    PodKey,
    PodSample,
    Validation,
    assemble,
    pod_key,
    unavailable,
)
from services.fetcher.settings import FetcherSettings
from shared.messages import MetricsSnapshot, ReplicaMetrics, Target, VAKey, va_key

log = logging.getLogger("wva.fetcher.scrape")

_GAUGES: Final = {
    "vllm:kv_cache_usage_perc": ("kv_cache_usage", "max"),
    "vllm:num_requests_waiting": ("waiting", "sum"),
    "vllm:num_requests_running": ("running", "sum"),
}
_HISTORY: Final = 64  # successive scrapes kept per pod, at most


def counter_fields(itl_metric: str) -> dict[str, str]:
    """Sample name -> the rate field it feeds."""
    return {
        "vllm:request_success_total": "request_rate",
        "vllm:request_prompt_tokens_sum": "request_prompt_tokens_rate",
        "vllm:request_generation_tokens_sum": "request_generation_tokens_rate",
        "vllm:generation_tokens_total": "generation_tokens_rate",
        "vllm:time_to_first_token_seconds_sum": "ttft_sum_rate",
        "vllm:time_to_first_token_seconds_count": "ttft_count_rate",
        f"{itl_metric}_sum": "itl_sum_rate",
        f"{itl_metric}_count": "itl_count_rate",
    }


def parse(text: str, *, itl_metric: str) -> tuple[PodSample, dict[str, float]]:
    """Gauges of one scrape, and its counter totals by rate field."""
    counters = counter_fields(itl_metric)
    sample = PodSample()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in _GAUGES:
                field, how = _GAUGES[s.name]
                sample.merge(field, float(s.value), how=how)
            elif s.name in counters:
                field = counters[s.name]
                totals[field] = totals.get(field, 0.0) + float(s.value)
            elif s.name == "vllm:cache_config_info":
                try:
                    sample.num_gpu_blocks = int(s.labels["num_gpu_blocks"])
                    sample.block_size = int(s.labels["block_size"])
                except (KeyError, ValueError):
                    pass
    return sample, totals


class RateTracker:
    """Successive counter totals per pod -> per-second rates over (at most) the rate window."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._history: dict[PodKey, deque[tuple[float, dict[str, float]]]] = {}

    def observe(self, key: PodKey, at: float, totals: dict[str, float]) -> dict[str, float | None]:
        history = self._history.setdefault(key, deque(maxlen=_HISTORY))
        history.append((at, totals))
        # Keep the newest scrape that is at least one window old, and everything after it.
        while len(history) > 2 and history[1][0] <= at - self._window:
            history.popleft()
        rates: dict[str, float | None] = dict.fromkeys(RATES, None)
        if len(history) < 2:
            return rates
        for field in RATES:
            increase = 0.0
            seen = True
            for (_, before), (_, after) in zip(list(history)[:-1], list(history)[1:], strict=True):
                if field not in before or field not in after:
                    seen = False
                    break
                delta = after[field] - before[field]
                increase += after[field] if delta < 0 else delta  # a decrease is a restart
            elapsed = at - history[0][0]
            if seen and elapsed > 0:
                rates[field] = increase / elapsed
        return rates

    def forget(self, keep: set[PodKey]) -> None:
        for key in [k for k in self._history if k not in keep]:
            del self._history[key]


class ScrapeCollector:
    name = "scrape"

    def __init__(self, settings: FetcherSettings) -> None:
        self._settings = settings
        self._rates = RateTracker(settings.rate_window)
        self._slots = asyncio.Semaphore(settings.prometheus_concurrency)
        self._session: aiohttp.ClientSession | None = None
        self.queries = 0

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.prometheus_timeout)
            )
        return self._session

    async def _scrape(self, address: str) -> str:
        async with self._slots:
            self.queries += 1
            try:
                async with self._client().get(f"http://{address}/metrics") as resp:
                    resp.raise_for_status()
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                telemetry.QUERIES.labels(backend=self.name, outcome="error").inc()
                raise ScrapeFailed(f"scrape of {address} failed: {exc or type(exc).__name__}") from None
            telemetry.QUERIES.labels(backend=self.name, outcome="ok").inc()
            return text

    async def _pod(self, namespace: str, pod: str, address: str) -> PodSample:
        loop = asyncio.get_running_loop()
        started = loop.time()
        text = await self._scrape(address)
        telemetry.QUERY_SECONDS.labels(backend=self.name).observe(loop.time() - started)
        try:
            sample, totals = parse(text, itl_metric=self._settings.itl_metric)
        except ValueError as exc:
            raise ScrapeFailed(f"unreadable /metrics from {address}: {exc}") from None
        for field, value in self._rates.observe(pod_key(namespace, pod), loop.time(), totals).items():
            setattr(sample, field, value)
        return sample

    async def _collect(self, targets: Sequence[Target]) -> Collection:
        collected_at = datetime.now(UTC)
        before = self.queries
        jobs = [(t.namespace, p.name, p.address) for t in targets for p in t.pods if p.address]
        results = await asyncio.gather(*(self._pod(*job) for job in jobs), return_exceptions=True)
        samples: dict[PodKey, PodSample] = {}
        errors: list[str] = []
        for (ns, pod, _), result in zip(jobs, results, strict=True):
            if isinstance(result, ScrapeFailed):
                errors.append(str(result))
            elif isinstance(result, BaseException):
                raise result
            else:
                samples[pod_key(ns, pod)] = result
        snapshots: dict[VAKey, MetricsSnapshot] = {}
        dropped_total = 0
        for t in targets:
            scraped = [p for p in t.pods if pod_key(t.namespace, p.name) in samples]
            if t.pods and not scraped and errors:
                snapshot = unavailable(t, collected_at=collected_at, reason=f"scrape: {errors[0]}")
            else:
                snapshot, dropped = assemble(
                    t, samples, collected_at=collected_at, missing_reason="no rates yet (first scrape)"
                )
                for field, count in dropped.items():
                    telemetry.DROPPED.labels(field=field).inc(count)
                dropped_total += snapshot.dropped_values
            snapshots[va_key(t.namespace, t.name)] = snapshot
        return Collection(
            snapshots=snapshots, queries=self.queries - before, failed=len(errors),
            dropped_values=dropped_total, errors=tuple(errors),
        )

    async def collect(self, targets: Sequence[Target]) -> Collection:
        collection = await self._collect(targets)
        self._rates.forget({pod_key(t.namespace, p.name) for t in targets for p in t.pods})
        return collection

    async def allocation_metrics(self, target: Target) -> MetricsSnapshot:
        return (await self._collect([target])).snapshots[va_key(target.namespace, target.name)]

    async def replica_metrics(
        self, *, model_id: str, namespace: str, targets: Sequence[Target]
    ) -> tuple[ReplicaMetrics, ...]:
        members = [t for t in targets if t.namespace == namespace and t.model_id == model_id]
        collection = await self._collect(members)
        return tuple(r for t in members for r in collection.snapshots[va_key(t.namespace, t.name)].replicas)

    async def validate_availability(self, *, model_id: str, namespace: str) -> Validation:
        # Without a central store there is nothing to ask before a pod is known; pods are read directly.
        return Validation(available=True, reason="the scrape backend reads pods directly")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ScrapeFailed(CollectorError):
    """One pod could not be scraped (counted; the VA is partial or unavailable)."""


