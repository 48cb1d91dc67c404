"""The fetcher's I/O shell: NATS in, NATS out (docs/design.md §3, §4).

- follows ``wva.targets.>`` from the last value per subject (warm at once after a restart): a
  ``Target`` is tracked, a ``TargetDeleted`` stops tracking, drops the cache and tombstones the
  metrics subject;
- follows ``wva.invalidate.>`` from new messages: drop the VA's cache entries and refresh it promptly;
- answers ``wva.fetch.<ns>.<va>`` requests in a queue group, so replicas share the work;
- runs the background cycle and the cache cleanup;
- publishes every snapshot on ``wva.metrics.<ns>.<va>`` with JetStream.

A payload that does not decode is logged with its subject, counted, and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import cast

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.fetcher import cache as caching
from services.fetcher import factory, telemetry
from services.fetcher.fetching import Fetcher
from services.fetcher.settings import FetcherSettings
from services.fetcher.tracking import Tracker
from shared import messages, natsio, streams
from shared.lifecycle import Runtime
from shared.messages import FetchRequest, Invalidation, MetricsDeleted, MetricsSnapshot, Target, TargetDeleted
from shared.observability import count_rejected
from shared.subjects import SubjectError, SubjectKind, Subjects

log = logging.getLogger("wva.fetcher")


def build(settings: FetcherSettings, runtime: Runtime) -> Fetcher:
    cache: caching.MetricsCache = (
        caching.MemoryCache(settings.cache_ttl) if settings.cache_enabled else caching.NoOpCache()
    )

    async def publish(snapshot: MetricsSnapshot) -> None:
        await natsio.publish(runtime.js, runtime.subjects.metrics(snapshot.namespace, snapshot.name), snapshot)

    return Fetcher(collector=factory.create(settings), cache=cache, tracker=Tracker(), publish=publish)


async def main(runtime: Runtime) -> None:
    settings = cast(FetcherSettings, runtime.settings)
    fetcher = build(settings, runtime)
    runtime.extras["fetcher"] = fetcher  # tests and the sandbox look inside
    subjects = runtime.subjects
    runtime.health.set("targets", False)
    targets = streams.Follower(runtime.js, subjects.wildcard(SubjectKind.TARGETS), start="last_per_subject")
    invalidations = streams.Follower(runtime.js, subjects.wildcard(SubjectKind.INVALIDATE), start="new")
    requests = await runtime.nc.subscribe(subjects.wildcard(SubjectKind.FETCH), queue=settings.fetch_queue_group)
    log.info(
        "fetcher collecting",
        extra={
            "backend": fetcher.collector.name,
            "query_mode": settings.query_mode,
            "fetch_interval": settings.fetch_interval,
            "cache": settings.cache_enabled,
        },
    )
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_follow_targets(targets, fetcher, runtime), name="fetcher-targets")
            tg.create_task(_follow_invalidations(invalidations, fetcher, subjects), name="fetcher-invalidations")
            tg.create_task(_serve_fetches(requests, fetcher, subjects), name="fetcher-requests")
            tg.create_task(fetcher.run_refresher(), name="fetcher-refresher")
            if settings.cache_enabled:
                tg.create_task(fetcher.run_cleanup(settings.cache_cleanup_interval), name="fetcher-cleanup")
            await targets.caught_up.wait()
            runtime.health.set("targets", True)
            log.info("fetcher warm", extra={"tracked": len(fetcher.tracker)})
            if settings.fetch_interval > 0:
                tg.create_task(fetcher.run_background(settings.fetch_interval), name="fetcher-background")
    finally:
        with contextlib.suppress(nats.errors.Error):
            await requests.unsubscribe()
        await fetcher.aclose()


async def _follow_targets(follower: streams.Follower, fetcher: Fetcher, runtime: Runtime) -> None:
    async for msg in follower:
        try:
            message = messages.targets_decoder.decode(msg.data)
        except messages.MessageError as exc:
            _reject(msg.subject, "targets", exc)
            continue
        if isinstance(message, Target):
            is_new = fetcher.tracker.get(message.namespace, message.name) is None
            fetcher.track(message)
            if is_new and follower.caught_up.is_set():
                fetcher.refresh(message.namespace, message.name)  # a new VA gets data at once
        elif isinstance(message, TargetDeleted):
            fetcher.forget(message.namespace, message.name)
            tombstone = MetricsDeleted(namespace=message.namespace, name=message.name, at=message.at)
            try:
                await natsio.publish(
                    runtime.js,
                    runtime.subjects.metrics(message.namespace, message.name),
                    tombstone,
                    msg_id=f"metrics-deleted:{message.namespace}/{message.name}:{message.at.isoformat()}",
                )
                telemetry.SNAPSHOTS.labels(status="deleted").inc()
            except Exception as exc:  # the tombstone is best effort: the scaler also sees the target's
                log.warning("could not publish metrics tombstone: %s", exc, extra={"subject": msg.subject})


async def _follow_invalidations(follower: streams.Follower, fetcher: Fetcher, subjects: Subjects) -> None:
    async for msg in follower:
        try:
            message = messages.events_decoder.decode(msg.data)
        except messages.MessageError as exc:
            _reject(msg.subject, "invalidate", exc)
            continue
        if not isinstance(message, Invalidation):
            continue  # decisions share the stream but not this subject filter; be lenient anyway
        telemetry.INVALIDATIONS.labels(reason=message.reason).inc()
        log.info(
            "invalidating cached metrics",
            extra={"namespace": message.namespace, "vaName": message.name, "reason": message.reason},
        )
        fetcher.invalidate(message.namespace, message.name)


async def _serve_fetches(sub: Subscription, fetcher: Fetcher, subjects: Subjects) -> None:
    async with asyncio.TaskGroup() as tg:
        async for msg in sub.messages:
            tg.create_task(_answer(msg, fetcher, subjects))


async def _answer(msg: Msg, fetcher: Fetcher, subjects: Subjects) -> None:
    try:
        ref = subjects.parse(msg.subject)
    except SubjectError as exc:
        count_rejected("fetch", "invalid_subject")
        log.warning("fetch request on an unusable subject: %s", exc, extra={"subject": msg.subject})
        return
    fresh = False
    snapshot: MetricsSnapshot | None = None
    if msg.data:
        try:
            request: FetchRequest = messages.fetch_decoder.decode(msg.data)
            fresh = request.fresh
        except messages.MessageError as exc:
            _reject(msg.subject, "fetch", exc)
            now = messages.utcnow()
            snapshot = MetricsSnapshot(
                namespace=ref.namespace, name=ref.name, at=now, collected_at=now, status="unavailable",
                reason=f"malformed fetch request: {exc}",
            )
            telemetry.FETCH_REQUESTS.labels(answer="rejected").inc()
    if snapshot is None:
        snapshot, answer = await fetcher.fetch(ref.namespace, ref.name, fresh=fresh)
        telemetry.FETCH_REQUESTS.labels(answer=answer).inc()
    if msg.reply:
        with contextlib.suppress(nats.errors.Error):
            await msg.respond(messages.encode(snapshot))


def _reject(subject: str, kind: str, exc: messages.MessageError) -> None:
    count_rejected(kind, exc.reason)
    log.warning("skipping undecodable message: %s", exc, extra={"subject": subject, "reason": exc.reason})
