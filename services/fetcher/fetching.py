"""The fetcher's core: background cycles, on-demand fetches, invalidation, cache — no NATS here.

- ``cycle()`` collects every tracked VA in one batched collection, caches and publishes the snapshots,
  and logs one summary line (the seed's ``Background fetch completed for N VAs in X ms``).
- ``fetch()`` answers from cache when fresh (``Using cached allocation metrics``), otherwise
  (``Cache miss for allocation metrics, fetching from …``) asks for a refresh and waits for it.
- Refreshes are single-flight and batched: every VA that needs fresh data within a few milliseconds
  (concurrent on-demand misses, a burst of invalidations after a re-list) is collected by one call to
  the collector, and concurrent requests for the same VA share it.
- With several replicas (docs/design.md §11) ``owns`` says which VAs are this replica's (its leases'
  partitions): cycles and refreshes collect, cache and publish only those.
- ``invalidate()`` drops the VA's cache entry and refreshes it promptly — once the fetcher holds the
  Target of the Deployment generation the invalidation announced: when the invalidation is ahead of
  the target stream, the refresh waits for that Target (``track()`` releases it), so the snapshot that
  follows a change names the generation and template hash it describes. A collection that started
  before a VA's invalidation, or while its refresh waits for a newer Target, is neither cached nor
  published for that VA, so old data never overwrites the fresh snapshot that follows the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal

from services.fetcher import cache as caching
from services.fetcher import telemetry
from services.fetcher.collector import MetricsCollector, unavailable
from services.fetcher.tracking import Tracker
from shared.messages import MetricsSnapshot, Target, VAKey, utcnow, va_key

log = logging.getLogger("wva.fetcher")

Publish = Callable[[Sequence[MetricsSnapshot]], Awaitable[Sequence[Exception | None]]]
"""Publishes snapshots together (acks awaited together: ``Runtime.publish_many``); for each, None once
stored, else the error it failed with after the publisher's own retries."""
Owns = Callable[[Target], bool]
Answer = Literal["cached", "fetched", "unknown"]

DEBOUNCE: Final = 0.02  # seconds a refresh waits for others to join its batch


@dataclass(frozen=True, slots=True)
class CycleReport:
    vas: int
    queries: int
    duration_ms: float
    ok: int
    partial: int
    unavailable: int
    dropped_values: int
    skipped: int  # invalidated or deleted while the cycle ran


class Fetcher:
    def __init__(
        self,
        *,
        collector: MetricsCollector,
        cache: caching.MetricsCache,
        tracker: Tracker,
        publish: Publish,
        debounce: float = DEBOUNCE,
        owns: Owns | None = None,
    ) -> None:
        self.collector = collector
        self.cache = cache
        self.tracker = tracker
        self._publish = publish
        self._debounce = debounce
        self.owns = owns
        self._pending: dict[VAKey, asyncio.Future[MetricsSnapshot]] = {}
        self._inflight: dict[VAKey, asyncio.Future[MetricsSnapshot]] = {}
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ background

    async def cycle(self) -> CycleReport:
        loop = asyncio.get_running_loop()
        targets = self.tracker.all() if self.owns is None else [t for t in self.tracker.all() if self.owns(t)]
        started, t0 = self.tracker.now(), loop.time()
        collection = await self.collector.collect(targets)
        fresh, skipped = self._current(collection.snapshots, started)
        # Cached while NATS stores the batch: the publisher sends every snapshot before it first waits.
        publishing = asyncio.ensure_future(self._publish_all(list(fresh.values())))
        try:
            await asyncio.sleep(0)
            self._cache(fresh)
        except BaseException:  # cancelled: so is the publishing, as when it was awaited here
            publishing.cancel()
            raise
        await publishing
        statuses = [s.status for s in collection.snapshots.values()]
        report = CycleReport(
            vas=len(targets),
            queries=collection.queries,
            duration_ms=(loop.time() - t0) * 1000.0,
            ok=statuses.count("ok"),
            partial=statuses.count("partial"),
            unavailable=statuses.count("unavailable"),
            dropped_values=collection.dropped_values,
            skipped=skipped,
        )
        telemetry.CYCLES.inc()
        telemetry.CYCLE_SECONDS.observe(report.duration_ms / 1000.0)
        telemetry.LAST_CYCLE.set_to_current_time()
        telemetry.CACHE_ENTRIES.set(len(self.cache))
        log.info(
            "Background fetch completed for %d VAs in %d ms",
            report.vas,
            round(report.duration_ms),
            extra={
                "queries": report.queries,
                "ok": report.ok,
                "partial": report.partial,
                "unavailable": report.unavailable,
                "dropped_values": report.dropped_values,
                "skipped": report.skipped,
                "backend": self.collector.name,
                **({"error": collection.errors[0]} if collection.errors else {}),
            },
        )
        return report

    async def run_background(self, interval: float) -> None:
        """Run a cycle every ``interval`` seconds, measured start to start; never overlapping."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            if len(self.tracker) and (self.owns is None or any(map(self.owns, self.tracker.all()))):
                await self.cycle()
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def run_cleanup(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            removed = self.cache.cleanup()
            telemetry.CACHE_ENTRIES.set(len(self.cache))
            if removed:
                log.debug("removed %d expired cache entries", removed)

    # ------------------------------------------------------------------ on demand

    async def fetch(self, namespace: str, name: str, *, fresh: bool = False) -> tuple[MetricsSnapshot, Answer]:
        target = self.tracker.get(namespace, name)
        if target is None:
            reason = f"VA {namespace}/{name} is not tracked (no target on wva.targets)"
            return unavailable(va_key(namespace, name), reason=reason), "unknown"
        if not fresh:
            entry = self.cache.get(caching.allocation_key(namespace, name))
            if entry is not None and isinstance(entry.value, MetricsSnapshot):
                telemetry.CACHE.labels(result="hit").inc()
                log.info(
                    "Using cached allocation metrics",
                    extra={"age": _age(entry.age(utcnow())), "namespace": namespace, "vaName": name},
                )
                return entry.value, "cached"
            telemetry.CACHE.labels(result="miss").inc()
        log.info(
            "Cache miss for allocation metrics, fetching from %s",
            "Prometheus" if self.collector.name == "prometheus" else f"the {self.collector.name} backend",
            extra={"namespace": namespace, "vaName": name, "fresh": fresh},
        )
        snapshot = await asyncio.shield(self.refresh(namespace, name))
        return snapshot, "fetched"

    def refresh(self, namespace: str, name: str) -> asyncio.Future[MetricsSnapshot]:
        """A future for a fresh snapshot of the VA; joins a pending or running refresh of it."""
        key = va_key(namespace, name)
        future = self._pending.get(key) or self._inflight.get(key)
        if future is None or future.done():
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            self._wake.set()
        return future

    async def run_refresher(self) -> None:
        """Collect pending refreshes in batches; one collector call per batch."""
        try:
            while True:
                await self._wake.wait()
                await asyncio.sleep(self._debounce)
                self._wake.clear()
                batch, self._pending = self._pending, {}
                self._inflight.update(batch)
                try:
                    await self._refresh_batch(batch)
                finally:
                    for key, future in batch.items():
                        if self._inflight.get(key) is future:
                            del self._inflight[key]
        finally:
            for future in [*self._pending.values(), *self._inflight.values()]:
                if not future.done():
                    future.cancel()

    async def _refresh_batch(self, batch: dict[VAKey, asyncio.Future[MetricsSnapshot]]) -> None:
        targets: list[Target] = []
        for key, future in batch.items():
            target = self.tracker.get(*key)
            if target is None:
                future.set_result(unavailable(key, reason="VA deleted while fetching"))
            elif self.owns is not None and not self.owns(target):
                future.set_result(unavailable(key, reason="another fetcher replica's partition"))
            else:
                targets.append(target)
        if not targets:
            return
        started = self.tracker.now()
        try:
            if len(targets) == 1:  # a targeted query, restricted to the VA's pods
                snapshot = await self.collector.allocation_metrics(targets[0])
                snapshots = {va_key(snapshot.namespace, snapshot.name): snapshot}
            else:
                snapshots = (await self.collector.collect(targets)).snapshots
        except BaseException as exc:
            for target in targets:
                future = batch[va_key(target.namespace, target.name)]
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            raise
        fresh, _ = self._accept(snapshots, started)
        for key, snapshot in snapshots.items():
            waiting = batch.get(key)
            if waiting is not None and not waiting.done():
                waiting.set_result(snapshot)
        await self._publish_all(fresh)

    # ------------------------------------------------------------------ changes

    def invalidate(self, namespace: str, name: str, *, generation: int = 0) -> None:
        """Drop what is cached for the VA and refresh it promptly, with the Target of ``generation``
        (now when the fetcher holds it, else when it arrives). Untracked VAs leave nothing behind."""
        key = va_key(namespace, name)
        self.cache.delete(caching.allocation_key(namespace, name))
        telemetry.CACHE_ENTRIES.set(len(self.cache))
        self._inflight.pop(key, None)  # a running refresh predates the change: do not join it
        if self.tracker.mark_invalidated(namespace, name, generation=generation):
            self.refresh(namespace, name)

    def forget(self, namespace: str, name: str) -> Target | None:
        """Stop tracking a deleted VA and drop its cache entry."""
        target = self.tracker.remove(namespace, name)
        self.cache.delete(caching.allocation_key(namespace, name), reason="deleted")
        telemetry.CACHE_ENTRIES.set(len(self.cache))
        telemetry.TRACKED.set(len(self.tracker))
        return target

    def track(self, target: Target) -> bool:
        """Track a Target; refresh it when a deferred invalidation waited for it. True when it changed."""
        changed = self.tracker.put(target)
        telemetry.TRACKED.set(len(self.tracker))
        if self.tracker.release(target):
            self.refresh(target.namespace, target.name)
        return changed

    # ------------------------------------------------------------------ helpers

    def _accept(
        self, snapshots: dict[VAKey, MetricsSnapshot], started: float
    ) -> tuple[list[MetricsSnapshot], int]:
        """Cache the snapshots still current; returns them (to publish) and how many were skipped."""
        fresh, skipped = self._current(snapshots, started)
        self._cache(fresh)
        return list(fresh.values()), skipped

    def _current(
        self, snapshots: dict[VAKey, MetricsSnapshot], started: float
    ) -> tuple[dict[VAKey, MetricsSnapshot], int]:
        """The snapshots still current (to cache and publish), and how many were skipped."""
        fresh: dict[VAKey, MetricsSnapshot] = {}
        skipped = 0
        for key, snapshot in snapshots.items():
            if (
                self.tracker.get(*key) is None
                or self.tracker.invalidated_since(key, started)
                or self.tracker.awaiting(key) is not None  # describes a Deployment known to be outdated
            ):
                skipped += 1
                continue
            fresh[key] = snapshot
        return fresh, skipped

    def _cache(self, snapshots: dict[VAKey, MetricsSnapshot]) -> None:
        for key, snapshot in snapshots.items():
            if snapshot.status != "unavailable":
                self.cache.set(caching.allocation_key(*key), snapshot, collected_at=snapshot.collected_at)
        telemetry.CACHE_ENTRIES.set(len(self.cache))

    async def _publish_all(self, snapshots: Sequence[MetricsSnapshot]) -> None:
        """Publish together; every snapshot that could not be stored is counted and logged (NATS trouble
        must not stop collecting: the next cycle or refresh publishes fresher data)."""
        if not snapshots:
            return
        try:
            errors = await self._publish(snapshots)
        except Exception as exc:  # the publisher itself failed: nothing of this batch was stored
            errors = [exc] * len(snapshots)
        outcomes = list(zip(snapshots, errors, strict=True))
        for status, n in Counter(s.status for s, error in outcomes if error is None).items():
            telemetry.SNAPSHOTS.labels(status=status).inc(n)
        lost = [(s, error) for s, error in outcomes if error is not None]
        if lost:
            telemetry.PUBLISH_FAILURES.inc(len(lost))
            snapshot, error = lost[0]
            log.warning(
                "could not publish %d of %d metrics snapshots: %s", len(lost), len(snapshots), error,
                extra={"namespace": snapshot.namespace, "vaName": snapshot.name, "failed": len(lost)},
            )

    async def aclose(self) -> None:
        for future in [*self._pending.values(), *self._inflight.values()]:
            if not future.done():
                future.cancel()
        with contextlib.suppress(Exception):
            await self.collector.aclose()


def _age(age: timedelta) -> str:
    seconds = max(0.0, age.total_seconds())
    return f"{seconds:.1f}s"
