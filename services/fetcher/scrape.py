"""The scrape backend: read each pod's ``/metrics`` directly (Prometheus text format), no Prometheus.

For installations without Prometheus, and the sandbox without the binary. Pod addresses come from the
targets (``PodRef.address``). Gauges are read as they are; counters (and histogram ``_sum``/``_count``)
become rates from successive scrapes of the same pod: the rate is taken between the current scrape and
the oldest one kept within the rate window (a counter that went down is a restart: its new value is
the increase). The first scrape of a pod has no rates yet, so its VA is ``partial`` until the next.

Every pod is untrusted: whatever one serves is that pod's problem only. A scrape never follows a
redirect (the fetcher's network position must not be lent to whoever answers), reads at most
``WVA_SCRAPE_MAX_BYTES`` of body, and is bounded by ``WVA_PROMETHEUS_TIMEOUT`` from connect to last
byte. A failure — unreachable, a status other than 200, a body too large, not UTF-8, not the text
format — becomes a short reason naming the pod (``pod X: metrics body larger than N bytes``) in its own
VA's snapshot only; the detail goes to the fetcher's log. The text is parsed in a worker thread, so a
large body does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, NoReturn

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from services.fetcher import gateway, telemetry
from services.fetcher.collector import (
    RATES,
    Collection,
    CollectorError,
    PodKey,
    PodSample,
    assemble,
    count_label,
    pod_key,
    unavailable,
)
from services.fetcher.settings import FetcherSettings
from shared.messages import MetricsSnapshot, Target, VAKey, va_key
from shared.redaction import redact

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
                sample.num_gpu_blocks = count_label(s.labels.get("num_gpu_blocks"))
                sample.block_size = count_label(s.labels.get("block_size"))
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


class ScrapeFailed(CollectorError):
    """One pod (or the gateway) could not be scraped. ``str()`` is the short reason its VA shows (it
    names the pod: ``source`` is ``pod <name>`` or ``gateway``); ``detail`` is for the fetcher's log."""

    def __init__(self, source: str, reason: str, *, detail: str = "") -> None:
        super().__init__(f"{source}: {reason}", detail=detail)


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

    async def _scrape(self, source: str, url: str) -> str:
        """The text at ``url``; ScrapeFailed naming ``source`` for anything else. ``url`` goes to the
        log only (redacted: the gateway's may carry credentials), never into a reason."""
        limit = self._settings.scrape_max_bytes
        where = redact(url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with self._slots:
            self.queries += 1
            try:
                async with self._client().get(url, allow_redirects=False) as resp:
                    if resp.status != 200:
                        redirect = " (redirects are not followed)" if 300 <= resp.status < 400 else ""
                        _fail(source, f"HTTP {resp.status}{redirect}", detail=f"{where} answered {resp.status}")
                    if (resp.content_length or 0) > limit:
                        _fail(source, f"metrics body larger than {limit} bytes", detail=f"{where}: Content-Length {resp.content_length}")
                    body = bytearray()
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        body += chunk
                        if len(body) > limit:
                            _fail(source, f"metrics body larger than {limit} bytes", detail=where)
            except ScrapeFailed:
                telemetry.QUERIES.labels(backend=self.name, outcome="error").inc()
                raise
            except TimeoutError:
                telemetry.QUERIES.labels(backend=self.name, outcome="error").inc()
                _fail(source, f"timed out after {self._settings.prometheus_timeout:g}s", detail=where)
            except (aiohttp.ClientError, OSError) as exc:  # ServerDisconnected, ClientPayloadError, …
                telemetry.QUERIES.labels(backend=self.name, outcome="error").inc()
                _fail(source, "unreachable", detail=redact(f"{where}: {type(exc).__name__}: {exc}"))
            telemetry.QUERIES.labels(backend=self.name, outcome="ok").inc()
        telemetry.QUERY_SECONDS.labels(backend=self.name).observe(loop.time() - started)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(source, "metrics are not UTF-8 text", detail=f"{where}: {exc}")

    async def _pod(self, namespace: str, pod: str, address: str) -> PodSample:
        source, url = f"pod {pod}", f"http://{address}/metrics"
        text = await self._scrape(source, url)
        try:
            sample, totals = await asyncio.to_thread(parse, text, itl_metric=self._settings.itl_metric)
        except Exception as exc:  # whatever the parser makes of hostile text is this pod's problem only
            _fail(source, "unreadable metrics (not the Prometheus text format)", detail=f"{address}: {type(exc).__name__}: {exc}")
        loop = asyncio.get_running_loop()
        for field, value in self._rates.observe(pod_key(namespace, pod), loop.time(), totals).items():
            setattr(sample, field, value)
        return sample

    async def _gateway(self) -> tuple[gateway.Queues, str]:
        """The gateway's queue per model (one scrape of WVA_GATEWAY_METRICS_URL, when set), and the note
        snapshots get when it failed."""
        url = self._settings.gateway_metrics_url
        if not url:
            return None, ""
        metric = self._settings.gateway_queue_metric
        try:
            text = await self._scrape("gateway", url)
            try:
                return await asyncio.to_thread(gateway.from_text, text, metric=metric), ""
            except Exception as exc:  # hostile text: the gateway's problem, never the VAs' metrics
                _fail("gateway", "unreadable metrics (not the Prometheus text format)", detail=f"{type(exc).__name__}: {exc}")
        except ScrapeFailed as exc:
            return None, gateway.failed(self.name, exc)

    async def _collect(self, targets: Sequence[Target]) -> Collection:
        collected_at = datetime.now(UTC)
        before = self.queries
        jobs = [(t.namespace, p.name, p.address) for t in targets for p in t.pods if p.address]
        results, (queues, note) = await asyncio.gather(
            asyncio.gather(*(self._pod(*job) for job in jobs), return_exceptions=True), self._gateway()
        )
        samples: dict[PodKey, PodSample] = {}
        failures: dict[PodKey, ScrapeFailed] = {}
        for (ns, pod, _), result in zip(jobs, results, strict=True):
            if isinstance(result, ScrapeFailed):
                failures[pod_key(ns, pod)] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                samples[pod_key(ns, pod)] = result
        if failures:
            first = next(iter(failures.values()))
            log.warning(
                "could not scrape %d of %d pods; first: %s", len(failures), len(jobs), first,
                extra={"detail": first.detail},
            )
        snapshots: dict[VAKey, MetricsSnapshot] = {}
        dropped_total = 0
        for t in targets:
            # Only this VA's own pods: one tenant's failure never shows in another's status.
            own = [str(failures[k]) for k in (pod_key(t.namespace, p.name) for p in t.pods) if k in failures]
            scraped = [p for p in t.pods if pod_key(t.namespace, p.name) in samples]
            if t.pods and not scraped and own:
                snapshot = unavailable(t, collected_at=collected_at, reason=_summary(own))
            else:
                notes = ((_summary(own),) if own else ()) + ((note,) if note else ())
                snapshot, dropped = assemble(
                    t, samples, collected_at=collected_at, missing_reason="no rates yet (first scrape)",
                    notes=notes, gateway_queue=gateway.queue_of(queues, t.model_id),
                )
                for field, count in dropped.items():
                    telemetry.DROPPED.labels(field=field).inc(count)
                dropped_total += snapshot.dropped_values
            snapshots[va_key(t.namespace, t.name)] = snapshot
        return Collection(
            snapshots=snapshots, queries=self.queries - before, failed=len(failures),
            dropped_values=dropped_total, errors=tuple(str(f) for f in failures.values()),
        )

    async def collect(self, targets: Sequence[Target]) -> Collection:
        collection = await self._collect(targets)
        self._rates.forget({pod_key(t.namespace, p.name) for t in targets for p in t.pods})
        return collection

    async def allocation_metrics(self, target: Target) -> MetricsSnapshot:
        return (await self._collect([target])).snapshots[va_key(target.namespace, target.name)]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _fail(source: str, reason: str, *, detail: str) -> NoReturn:
    raise ScrapeFailed(source, reason, detail=detail) from None


def _summary(reasons: list[str], shown: int = 3) -> str:
    more = len(reasons) - shown
    return "; ".join(reasons[:shown]) + (f"; and {more} more pods" if more > 0 else "")
