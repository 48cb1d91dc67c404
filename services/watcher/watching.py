"""List, then watch, one kind of object in one namespace (or all), forever (kopf's ``watching.py``).

- The first list, and every re-list, hands the complete set of objects to the sink (``listed``); each
  watch event goes to the sink as it arrives (``changed``). Objects stay plain dicts here; the sink
  converts them once.
- A watch ends now and then (server timeout, dropped connection): it resumes from the last
  resourceVersion seen (events and bookmarks), so no change is missed.
- 410 Gone (as an HTTP status or as an ``ERROR`` event) means the history is compacted: re-list.
- Connection errors, 5xx and 429 are retried after a bounded, jittered exponential backoff (honouring
  ``Retry-After`` where the response carries one). Failing for longer than ``give_up_after`` without
  one clean session raises, and the service stops loudly. Other 4xx (403 Forbidden, 404 for a missing
  CRD) raise at once: they need a person.

Exceptions::

    kubernetes_asyncio.client.ApiException   non-transient API errors, raised to the service
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTResponse
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    stop_never,
    wait_exponential_jitter,
)

from services.watcher import telemetry
from services.watcher.index import ObjectKind
from shared import kube

log = logging.getLogger("wva.watcher.watching")

ListCall = Callable[..., Awaitable[Any]]
_QUICK_END: Final = 1.0  # a stream that ends sooner than this, empty, waits a little before the next


class Sink(Protocol):
    def listed(self, kind: ObjectKind, namespace: str | None, items: list[dict[str, Any]], *, expired: bool) -> None: ...

    def changed(self, kind: ObjectKind, event_type: str, obj: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Resource:
    """A kind of object and the kubernetes-asyncio calls that list (and watch) it."""

    kind: ObjectKind
    list_all: ListCall
    list_namespaced: ListCall  # first positional argument: the namespace
    label_selector: str | None = None

    def call(self, namespace: str | None) -> ListCall:
        if namespace is None:
            return self.list_all

        async def namespaced(**kwargs: Any) -> Any:
            return await self.list_namespaced(namespace, **kwargs)

        return namespaced


def resources(api: client.ApiClient, *, va_label_selector: str | None) -> list[Resource]:
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)

    async def vas_all(**kwargs: Any) -> Any:
        return await custom.list_cluster_custom_object(kube.GROUP, kube.VERSION, kube.PLURAL, **kwargs)

    async def vas_in(namespace: str, **kwargs: Any) -> Any:
        return await custom.list_namespaced_custom_object(kube.GROUP, kube.VERSION, namespace, kube.PLURAL, **kwargs)

    return [
        Resource("va", vas_all, vas_in, va_label_selector),
        Resource("deployment", apps.list_deployment_for_all_namespaces, apps.list_namespaced_deployment),
        Resource("replicaset", apps.list_replica_set_for_all_namespaces, apps.list_namespaced_replica_set),
        Resource("pod", core.list_pod_for_all_namespaces, core.list_namespaced_pod),
    ]


class _RawWatch(watch.Watch):
    """A Watch that leaves objects as dicts: the sink converts them into our own types, once."""

    def get_return_type(self, func: object) -> str:
        return ""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        # 410 here comes from a list (an expired continue token): listing again is the cure.
        return exc.status in (410, 429) or exc.status >= 500
    return isinstance(exc, (aiohttp.ClientError, OSError, asyncio.TimeoutError))


def retry_after(exc: BaseException | None) -> float:
    headers: Mapping[str, str] | None = getattr(exc, "headers", None) if isinstance(exc, ApiException) else None
    value = (headers or {}).get("Retry-After", "")
    return float(value) if value.strip().isdigit() else 0.0


class ResourceWatch:
    """List-then-watch of one :class:`Resource` in one namespace (None: all namespaces)."""

    def __init__(
        self,
        resource: Resource,
        namespace: str | None,
        sink: Sink,
        *,
        timeout_seconds: float = 300.0,
        backoff_min: float = 0.2,
        backoff_max: float = 30.0,
        give_up_after: float = 900.0,
        page_size: int = 500,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.sink = sink
        self.resource_version = ""
        self._timeout = timeout_seconds
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._give_up_after = give_up_after
        self._page_size = page_size
        self._call = resource.call(namespace)
        self._where = namespace or "*"

    async def run(self) -> None:
        expired = False
        while True:
            outcome = ""
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_transient),
                wait=self._wait,
                stop=stop_after_delay(self._give_up_after) if self._give_up_after > 0 else stop_never,
                before_sleep=self._on_retry,
                reraise=True,
            ):
                with attempt:
                    if not self.resource_version:
                        await self._list(expired=expired)
                        expired = False
                    outcome = await self._stream()
            telemetry.WATCH_RESTARTS.labels(kind=self.resource.kind, reason=outcome).inc()
            if outcome == "expired":
                log.info(
                    "watch of %s in %s expired (410 Gone): re-listing",
                    self.resource.kind,
                    self._where,
                    extra={"kind": self.resource.kind, "namespace": self._where},
                )
                self.resource_version = ""
                expired = True

    # ---------------------------------------------------------------- one list, one watch session

    async def _list(self, *, expired: bool) -> None:
        items: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        while True:
            response = await self._call(
                label_selector=self.resource.label_selector,
                limit=self._page_size,
                _continue=token,
                _preload_content=False,
                _request_timeout=(10, 60),
            )
            body = await _json(response)
            items.extend(body.get("items") or ())
            meta = body.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            token = meta.get("continue") or None
            if token is None:
                break
        self.sink.listed(self.resource.kind, self.namespace, items, expired=expired)
        self.resource_version = version
        log.debug("listed %d %s in %s at %s", len(items), self.resource.kind, self._where, version)

    async def _stream(self) -> str:
        """Watch from the current resourceVersion until the stream ends: "closed" or "expired" (410)."""
        loop = asyncio.get_running_loop()
        started, seen = loop.time(), 0
        timeout = int(self._timeout * random.uniform(1.0, 1.5))  # spread re-watches, as client-go does
        async with _RawWatch() as w:
            try:
                async for event in w.stream(
                    self._call,
                    resource_version=self.resource_version,
                    timeout_seconds=timeout,
                    allow_watch_bookmarks=True,
                    label_selector=self.resource.label_selector,
                    _request_timeout=(10, timeout + 30),
                ):
                    seen += 1
                    self._handle(event)
            except ApiException as exc:
                if exc.status == 410:
                    return "expired"
                raise
        if not seen and loop.time() - started < _QUICK_END:
            await asyncio.sleep(random.uniform(self._backoff_min, 2 * self._backoff_min))
        return "closed"

    def _handle(self, event: Mapping[str, Any]) -> None:
        event_type = str(event.get("type") or "")
        obj = event.get("raw_object")
        if not isinstance(obj, dict):
            return
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if event_type in ("ADDED", "MODIFIED", "DELETED"):
            self.sink.changed(self.resource.kind, event_type, obj)
        if version:
            self.resource_version = version

    # ---------------------------------------------------------------- backoff

    def _wait(self, state: RetryCallState) -> float:
        base = wait_exponential_jitter(multiplier=self._backoff_min, max=self._backoff_max)(state)
        exc = state.outcome.exception() if state.outcome else None
        return max(base, min(retry_after(exc), self._backoff_max))

    def _on_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        telemetry.WATCH_RESTARTS.labels(kind=self.resource.kind, reason="error").inc()
        log.warning(
            "watch of %s in %s failed (attempt %d), retrying after backoff: %s",
            self.resource.kind,
            self._where,
            state.attempt_number,
            _describe(exc),
            extra={"kind": self.resource.kind, "namespace": self._where, "attempt": state.attempt_number},
        )


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    return repr(exc)


async def _json(response: Any) -> dict[str, Any]:
    """Read a raw (``_preload_content=False``) response; raise ApiException for a non-2xx status."""
    try:
        data = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=RESTResponse(response, data))  # type: ignore[arg-type]  # what rest.py passes too
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ApiException(status=500, reason="list response is not a JSON object")
    return body
