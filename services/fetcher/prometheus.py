"""The Prometheus backend: batched (or per-VA) PromQL, split per VA by the targets' pod lists.

Queries are plain ``GET /api/v1/query`` with requests (synchronous). Each collector owns its
``requests.Session`` (urllib3 retries off: retries are ours, bounded by a time budget, with tenacity)
and a bounded ``ThreadPoolExecutor``; an ``asyncio.Semaphore`` of the same size keeps the executor's
queue empty, so a slow Prometheus never piles up threads or blocks the event loop. Every query has an
explicit timeout and is evaluated at the same instant (``time=``) so one snapshot is one moment. The
answer is decoded by ``answers`` (msgspec, typed, untracked by the garbage collector), in the
executor's thread, and each query's series are merged per pod as soon as it is answered, while the
others are still running. (prometheus-api-client, used before, decodes into dicts with the stdlib:
at 1,000 VAs that cost more than the queries; docs/benchmarks.md.)

Errors: connection errors, timeouts, 5xx and 429 are transient and retried until the budget runs out;
other 4xx (a bad query) fail at once. Whatever the client libraries raise is classified here — no
exception of requests or urllib3 escapes — and so is whatever a 200 answer holds (a body without
``data``, a result that is not a list of series). Redirects are not followed. A failed
collection becomes ``unavailable`` snapshots with a short, generic reason (``Prometheus unreachable``,
``HTTP 503 from Prometheus``) — never a URL, a header or the backend's own text, which may hold secrets
and would otherwise be copied into every VA's status; the detail goes to the fetcher's log, redacted.
It never raises into the service loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential
from urllib3.util.retry import Retry

from services.fetcher import answers, credentials, gateway, promql, telemetry
from services.fetcher.collector import (
    Collection,
    CollectorError,
    PodKey,
    PodSample,
    QueryError,
    assemble,
    count_label,
    pod_key,
    unavailable,
)
from services.fetcher.settings import FetcherSettings
from shared.messages import MetricsSnapshot, Target, VAKey, va_key
from shared.redaction import redact

log = logging.getLogger("wva.fetcher.prometheus")

_MAX_ATTEMPTS = 3


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, QueryError) and exc.transient


class PrometheusCollector:
    name = "prometheus"

    def __init__(self, settings: FetcherSettings) -> None:
        self._settings = settings
        self._session = requests.Session()
        self._session.verify = credentials.verify(ca=settings.prometheus_ca, insecure=settings.prometheus_insecure_skip_verify)
        if self._session.verify is False:
            # Asked for explicitly; said once here instead of a urllib3 warning on every query.
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
            log.warning("TLS verification of Prometheus is off (WVA_PROMETHEUS_INSECURE_SKIP_VERIFY=true)")
        try:
            auth = credentials.bearer_auth(
                token=settings.prometheus_token, token_file=settings.prometheus_token_file
            )
        except credentials.TokenFileError as exc:
            self._session.close()
            raise CollectorError(str(exc)) from None
        self._session.max_redirects = 0  # a redirect is an error, not a place to send the token
        # Gzip costs Prometheus ~25% more CPU per batched cycle (and us the inflating) for answers that
        # usually cross a cluster network; asked for only when the link is worth it (docs/benchmarks.md).
        self._session.headers["Accept-Encoding"] = "gzip, deflate" if settings.prometheus_compression else "identity"
        base = settings.prometheus_url.rstrip("/")
        self._session.mount(
            base, HTTPAdapter(max_retries=Retry(total=0, connect=0, read=0, redirect=0, status=0, raise_on_status=False))
        )
        self._url = f"{base}/api/v1/query"
        self._auth = auth
        self._executor = ThreadPoolExecutor(
            max_workers=settings.prometheus_concurrency, thread_name_prefix="wva-prometheus"
        )
        self._slots = asyncio.Semaphore(settings.prometheus_concurrency)
        self.queries = 0

    # ------------------------------------------------------------------ queries

    def _blocking_query(self, text: str, at: float, timeout: float) -> list[answers.Series]:
        # verify= explicitly: else REQUESTS_CA_BUNDLE in the environment would override the setting.
        response = self._session.get(
            self._url, params={"query": text, "time": f"{at:.3f}"}, auth=self._auth, timeout=timeout,
            verify=self._session.verify,
        )
        if response.status_code != 200:
            raise _HttpStatus(response.status_code)
        return answers.series(response.content)

    async def _once(self, text: str, *, at: float, timeout: float, sent: list[int]) -> list[answers.Series]:
        """One HTTP query, bounded by ``timeout`` as the caller sees it (slot wait included): requests'
        own timeout is per socket read, so a server that drips its answer would hold a caller forever.
        The slot is freed when the thread is, so such a server cannot pile up threads either."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout + 0.5):
                await self._slots.acquire()
                self.queries += 1
                sent[0] += 1
                job = loop.run_in_executor(
                    self._executor, functools.partial(self._blocking_query, text, at, timeout)
                )
                job.add_done_callback(lambda _: self._slots.release())
                try:
                    return await asyncio.shield(job)
                except asyncio.CancelledError:
                    job.add_done_callback(_consume)
                    raise
        except TimeoutError:
            raise _classify(TimeoutError(), self._settings.prometheus_timeout) from None
        except Exception as exc:
            # The configured timeout, not this attempt's (retries get what is left of the budget): a
            # reason that stays the same from one cycle to the next does not flap a VA's condition.
            raise _classify(exc, self._settings.prometheus_timeout) from None

    async def query(
        self, text: str, *, at: float, deadline: float, sent: list[int] | None = None
    ) -> list[answers.Series]:
        """One instant query with retries, bounded by ``deadline`` (event-loop time).

        ``sent[0]`` is increased by the number of HTTP requests made (retries included).
        """
        sent = [0] if sent is None else sent
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_transient),
                stop=stop_after_attempt(_MAX_ATTEMPTS) | stop_after_delay(max(0.0, deadline - started)),
                wait=wait_exponential(multiplier=0.1, max=1.0),
                before_sleep=lambda _: telemetry.QUERY_RETRIES.labels(backend=self.name).inc(),
                reraise=True,
            ):
                with attempt:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise QueryError("time budget for this collection exhausted", transient=False)
                    result = await self._once(
                        text, at=at, timeout=min(self._settings.prometheus_timeout, remaining), sent=sent
                    )
                    telemetry.QUERIES.labels(backend=self.name, outcome="ok").inc()
                    return result
        except QueryError:
            telemetry.QUERIES.labels(backend=self.name, outcome="error").inc()
            raise
        finally:
            telemetry.QUERY_SECONDS.labels(backend=self.name).observe(loop.time() - started)
        raise AssertionError("unreachable")  # pragma: no cover - AsyncRetrying returns or raises

    # ------------------------------------------------------------------ collection

    async def _samples(
        self, scope: promql.Scope, *, at: float, deadline: float, sent: list[int]
    ) -> dict[PodKey, PodSample]:
        """Run every query of one scope concurrently and merge the series per pod, each query's as soon
        as it is answered (the merge is independent of the order: maxima, sums, labels)."""
        qs = promql.queries(scope, rate_window=self._settings.rate_window, itl_metric=self._settings.itl_metric)
        samples: dict[PodKey, PodSample] = {}

        async def one(q: promql.Query) -> None:
            _merge(samples, q, await self.query(q.promql, at=at, deadline=deadline, sent=sent))

        results = await asyncio.gather(*(one(q) for q in qs), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return samples

    async def _gateway(self, *, at: float, deadline: float, sent: list[int]) -> tuple[gateway.Queues, str]:
        """The gateway's queue per model (one query), and the note snapshots get when it failed."""
        text = promql.gateway_queue(self._settings.gateway_queue_metric)
        try:
            return gateway.from_series(await self.query(text, at=at, deadline=deadline, sent=sent)), ""
        except CollectorError as exc:
            return None, gateway.failed(self.name, exc)

    async def _collect_scopes(
        self, groups: Sequence[tuple[promql.Scope, Sequence[Target]]], *, podless: Sequence[Target] = ()
    ) -> Collection:
        """Every scope's queries and the gateway's, concurrently; ``podless`` targets (a model at zero)
        get a snapshot with the gateway's queue only."""
        loop = asyncio.get_running_loop()
        at = time.time()
        collected_at = datetime.fromtimestamp(at, UTC)
        deadline = loop.time() + self._settings.fetch_budget
        sent = [0]
        outcomes, (queues, note) = await asyncio.gather(
            asyncio.gather(
                *(self._samples(scope, at=at, deadline=deadline, sent=sent) for scope, _ in groups),
                return_exceptions=True,
            ),
            self._gateway(at=at, deadline=deadline, sent=sent),
        )
        notes = (note,) if note else ()
        snapshots: dict[VAKey, MetricsSnapshot] = {}
        failed = dropped_total = 0
        errors: list[str] = []

        def add(t: Target, samples: dict[PodKey, PodSample]) -> None:
            nonlocal dropped_total
            snapshot, dropped = assemble(
                t, samples, collected_at=collected_at, notes=notes, gateway_queue=gateway.queue_of(queues, t.model_id)
            )
            for field, count in dropped.items():
                telemetry.DROPPED.labels(field=field).inc(count)
            dropped_total += snapshot.dropped_values
            snapshots[va_key(t.namespace, t.name)] = snapshot

        for (_, targets), outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, CollectorError):
                    raise outcome
                failed += 1
                errors.append(str(outcome))
                for t in targets:
                    snapshots[va_key(t.namespace, t.name)] = unavailable(
                        t, collected_at=collected_at, reason=str(outcome)
                    )
                continue
            for t in targets:
                add(t, outcome)
        for t in podless:
            add(t, {})
        first = next((o for o in outcomes if isinstance(o, CollectorError)), None)
        if first is not None:
            log.warning("Prometheus collection failed: %s", first, extra={"detail": first.detail, "failed_scopes": failed})
        return Collection(
            snapshots=snapshots, queries=sent[0], failed=failed, dropped_values=dropped_total,
            errors=tuple(errors),
        )

    async def collect(self, targets: Sequence[Target]) -> Collection:
        with_pods = [t for t in targets if t.pods]
        groups: list[tuple[promql.Scope, Sequence[Target]]]
        if not with_pods:
            groups = []
        elif self._settings.query_mode == "per-va":
            groups = [(promql.per_va(t.namespace, (p.name for p in t.pods)), [t]) for t in with_pods]
        else:
            groups = [(promql.batched(t.namespace for t in with_pods), with_pods)]
        return await self._collect_scopes(groups, podless=[t for t in targets if not t.pods])

    async def allocation_metrics(self, target: Target) -> MetricsSnapshot:
        if not target.pods:
            collection = await self._collect_scopes([], podless=[target])
        else:
            scope = promql.per_va(target.namespace, (p.name for p in target.pods))
            collection = await self._collect_scopes([(scope, [target])])
        return collection.snapshots[va_key(target.namespace, target.name)]

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._session.close()


def _merge(samples: dict[PodKey, PodSample], q: promql.Query, found: list[answers.Series]) -> None:
    """Add one query's series to the per-pod samples (a second series of a pod: ``PodSample.merge``)."""
    info = q.kind == "info"
    how = "max" if q.field == "kv_cache_usage" else "sum"
    for one in found:
        labels = one.metric
        if not labels.namespace or not labels.pod:
            continue  # not a pod's series: nothing to merge it into
        key = pod_key(labels.namespace, labels.pod)
        sample = samples.get(key)
        if sample is None:
            sample = samples[key] = PodSample()
        if info:
            sample.num_gpu_blocks = count_label(labels.num_gpu_blocks)
            sample.block_size = count_label(labels.block_size)
            continue
        value = one.number()
        if value is not None:
            sample.merge(q.field, value, how=how)


class _HttpStatus(Exception):
    """Prometheus answered with another status than 200 (the body is not kept: it may hold secrets)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _classify(exc: BaseException, timeout: float) -> QueryError:
    """One query's failure as a short, secret-free reason; the detail is logged (redacted, bounded)."""
    reason: str
    transient = True
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError) or _timed_out(exc):
        reason = f"Prometheus query timed out after {timeout:g}s"
    elif isinstance(exc, requests.exceptions.TooManyRedirects):
        reason, transient = "Prometheus answered with a redirect (not followed)", False
    elif isinstance(exc, requests.exceptions.SSLError):
        verify = "CERTIFICATE_VERIFY_FAILED" in str(exc)
        reason = "Prometheus TLS certificate verify failed" if verify else "Prometheus TLS handshake failed"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        reason = "Prometheus unreachable"
    elif isinstance(exc, answers.AnswerError) and exc.unreadable:
        reason = "Prometheus sent an unreadable answer"  # a proxy's error page
    elif isinstance(exc, _HttpStatus):
        transient = exc.status >= 500 or exc.status == 429
        reason = f"HTTP {exc.status} from Prometheus"
    elif isinstance(exc, answers.AnswerError):
        reason, transient = "Prometheus sent an answer of an unexpected shape", False
    else:  # requests' other errors (an invalid header, a bad chunk…) and anything else a library raises
        reason = f"Prometheus request failed ({type(exc).__name__})"
    # Exception texts may quote headers (an invalid one holds the token) or the backend's body: the log
    # gets the type, and the text only of connection-level errors, which name host and port at most.
    detail = type(exc).__name__
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        detail += f": {_short(redact(str(exc)))}"
    log.debug("Prometheus query failed: %s", detail)
    return QueryError(reason, transient=transient, detail=detail)


def _timed_out(exc: BaseException) -> bool:
    # With urllib3's retries off, requests reports a read timeout as a ConnectionError around it.
    wrapped = exc.args[0] if isinstance(exc, requests.exceptions.ConnectionError) and exc.args else None
    return isinstance(getattr(wrapped, "reason", None), urllib3.exceptions.TimeoutError)


def _consume(job: asyncio.Future[Any]) -> None:
    # The caller gave up on this thread's answer; retrieve its outcome so asyncio does not warn.
    if not job.cancelled():
        job.exception()


def _short(text: str) -> str:
    return text if len(text) <= 300 else text[:300] + "…"
