"""List, then watch, one kind of object in one namespace (or all), forever (kopf's ``watching.py``).

The one list-then-watch loop of wva: the watcher runs one per kind and namespace, the scaler one for
its ConfigMap and one for the VariantAutoscalings it takes its authority from.

- The first list, and every re-list, hands the complete set of objects to the sink (``listed``); each
  watch event goes to the sink as it arrives (``changed``). Objects stay plain dicts here; the sink
  converts them once.
- A watch ends now and then (server timeout, dropped connection): it resumes from the last
  resourceVersion seen (events and bookmarks), so no change is missed.
- 410 Gone (as an HTTP status or as an ``ERROR`` event) means the history is compacted: re-list.
- Transient failures (:func:`shared.kube.is_transient`) are retried after a bounded, jittered
  exponential backoff, honouring ``Retry-After``. Failing for longer than ``give_up_after`` without one
  clean session raises, and the service stops loudly. Other errors (403 Forbidden, 404 for a missing
  CRD) raise at once: they need a person.

Exceptions::

    kubernetes_asyncio.client.ApiException   non-transient API errors, raised to the service
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Generic, Protocol, TypeVar

from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    stop_never,
    wait_exponential_jitter,
)

from shared import kube

log = logging.getLogger("wva.kubewatch")

ListCall = Callable[..., Awaitable[Any]]
K = TypeVar("K", bound=str)
K_contra = TypeVar("K_contra", bound=str, contravariant=True)
_QUICK_END: Final = 1.0  # a stream that ends sooner than this, empty, waits a little before the next


class Sink(Protocol[K_contra]):
    def listed(self, kind: K_contra, namespace: str | None, items: list[dict[str, Any]], *, expired: bool) -> None: ...

    def changed(self, kind: K_contra, event_type: str, obj: dict[str, Any]) -> None: ...


OnRestart = Callable[[str, str], None]  # (kind, reason): "closed" | "expired" | "error"


class _RawWatch(watch.Watch):
    """A Watch that leaves objects as dicts: the sink converts them into our own types, once."""

    def get_return_type(self, func: object) -> str:
        return ""


class ListWatch(Generic[K]):
    """List-then-watch of one kind through ``call`` (a kubernetes-asyncio ``list_*`` function, already
    bound to its namespace) into ``sink``; ``namespace`` only labels logs and the sink's calls."""

    def __init__(
        self,
        kind: K,
        call: ListCall,
        namespace: str | None,
        sink: Sink[K],
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: float = 300.0,
        backoff_min: float = 0.2,
        backoff_max: float = 30.0,
        give_up_after: float = 900.0,
        page_size: int = 500,
        on_restart: OnRestart | None = None,
    ) -> None:
        self.kind = kind
        self.namespace = namespace
        self.sink = sink
        self.resource_version = ""
        self._call = call
        self._labels = label_selector
        self._fields = field_selector
        self._timeout = timeout_seconds
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._give_up_after = give_up_after
        self._page_size = page_size
        self._on_restart = on_restart or (lambda kind, reason: None)
        self._where = namespace or "*"

    async def run(self) -> None:
        expired = False
        while True:
            outcome = ""
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(kube.is_transient),
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
            self._on_restart(self.kind, outcome)
            if outcome == "expired":
                log.info(
                    "watch of %s in %s expired (410 Gone): re-listing",
                    self.kind,
                    self._where,
                    extra={"kind": self.kind, "namespace": self._where},
                )
                self.resource_version = ""
                expired = True

    # ---------------------------------------------------------------- one list, one watch session

    def _selectors(self) -> dict[str, str]:
        selectors = {}
        if self._labels is not None:
            selectors["label_selector"] = self._labels
        if self._fields is not None:
            selectors["field_selector"] = self._fields
        return selectors

    async def _list(self, *, expired: bool) -> None:
        items: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        while True:
            response = await self._call(
                **self._selectors(),
                limit=self._page_size,
                _continue=token,
                _preload_content=False,
                _request_timeout=kube.REQUEST_TIMEOUT,
            )
            body = await kube.read_json(response)
            items.extend(item for item in body.get("items") or () if isinstance(item, dict))
            meta = body.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            token = meta.get("continue") or None
            if token is None:
                break
        self.sink.listed(self.kind, self.namespace, items, expired=expired)
        self.resource_version = version
        log.debug("listed %d %s in %s at %s", len(items), self.kind, self._where, version)

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
                    **self._selectors(),
                    # connect bound; the read may idle up to the server-side timeout plus slack.
                    _request_timeout=(kube.REQUEST_TIMEOUT[0], timeout + 30),
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
            self.sink.changed(self.kind, event_type, obj)
        if version:
            self.resource_version = version

    # ---------------------------------------------------------------- backoff

    def _wait(self, state: RetryCallState) -> float:
        base = wait_exponential_jitter(multiplier=self._backoff_min, max=self._backoff_max)(state)
        exc = state.outcome.exception() if state.outcome else None
        return max(base, min(kube.retry_after(exc), self._backoff_max))

    def _on_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self._on_restart(self.kind, "error")
        log.warning(
            "watch of %s in %s failed (attempt %d), retrying after backoff: %s",
            self.kind,
            self._where,
            state.attempt_number,
            kube.describe(exc),
            extra={"kind": self.kind, "namespace": self._where, "attempt": state.attempt_number},
        )
