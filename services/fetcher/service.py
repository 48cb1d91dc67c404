"""The fetcher's I/O shell: NATS in, NATS out (docs/design.md §3, §4).

- follows ``wva.targets.>`` from the last value per subject (warm at once after a restart): a
  ``Target`` is tracked, a ``TargetDeleted`` stops tracking, drops the cache and tombstones the
  metrics subject;
- follows ``wva.invalidate.>`` from new messages: drop the VA's cache entry and refresh it promptly,
  with the Target of the Deployment generation the invalidation announces;
- answers ``wva.fetch.<ns>.<va>`` requests in a queue group, so replicas share the work — or, with
  several replicas sharing partitions through leases (docs/design.md §11), every replica hears every
  request and only the one holding the VA's partition answers (any answers for an unknown VA);
- runs the background cycle and the cache cleanup;
- publishes every snapshot on ``wva.metrics.<ns>.<va>`` with JetStream.

With leases, a replica collects, caches and publishes only the VAs of the partitions it holds (the
group's partition, so a model's variants stay together), refreshes a partition's VAs at once when it
gains it, and publishes a deleted VA's tombstone only for its own partitions.

Every message goes through ``shared.intake``: one that does not decode, or does not match its subject,
is counted in ``wva_messages_rejected_total``, logged (rate-limited) and skipped. Readiness follows the
followers: ``/readyz`` is false while one has lost its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import cast

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.fetcher import cache as caching
from services.fetcher import factory, telemetry
from services.fetcher.collector import unavailable
from services.fetcher.fetching import Fetcher
from services.fetcher.settings import FetcherSettings
from services.fetcher.tracking import Tracker
from shared import messages, publishing, streams
from shared.intake import Intake
from shared.leases import Leases
from shared.lifecycle import Runtime
from shared.messages import (
    FetchRequest,
    Invalidation,
    MessageError,
    MetricsDeleted,
    MetricsSnapshot,
    Target,
    va_key,
)
from shared.partitions import partition_of
from shared.subjects import SubjectError, SubjectKind

log = logging.getLogger("wva.fetcher")


def owner(leases: Leases | None, partitions: int) -> Callable[[Target], bool] | None:
    """Whether a VA is this replica's: its group's partition is leased to it (None: no leases, all are)."""
    if leases is None:
        return None
    return lambda target: leases.valid(str(partition_of(target.namespace, target.model_id, partitions)))


def build(settings: FetcherSettings, runtime: Runtime) -> Fetcher:
    cache: caching.MetricsCache = (
        caching.MemoryCache(settings.cache_ttl) if settings.cache_enabled else caching.NoOpCache()
    )

    async def publish(snapshots: Sequence[MetricsSnapshot]) -> list[Exception | None]:
        batch = [publishing.Outgoing(runtime.subjects.metrics(s.namespace, s.name), s) for s in snapshots]
        return [r if isinstance(r, Exception) else None for r in await runtime.publish_many(batch)]

    return Fetcher(
        collector=factory.create(settings), cache=cache, tracker=Tracker(), publish=publish,
        owns=owner(runtime.leases, settings.partitions),
    )


async def main(runtime: Runtime) -> None:
    settings = cast(FetcherSettings, runtime.settings)
    fetcher = build(settings, runtime)
    subjects = runtime.subjects
    intake = Intake(subjects)
    targets = streams.Follower(runtime.js, subjects.wildcard(SubjectKind.TARGETS), start="last_per_subject")
    invalidations = streams.Follower(runtime.js, subjects.wildcard(SubjectKind.INVALIDATE), start="new")
    runtime.health.set("targets", targets.caught_up.is_set)
    runtime.health.set("invalidations", invalidations.caught_up.is_set)
    # With leases the owner of a VA answers for it, so every replica must hear every request.
    queue = "" if runtime.leases is not None else settings.fetch_queue_group
    requests = await runtime.nc.subscribe(subjects.wildcard(SubjectKind.FETCH), queue=queue)
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
            tg.create_task(_follow_targets(targets, fetcher, runtime, intake), name="fetcher-targets")
            tg.create_task(_follow_invalidations(invalidations, fetcher, intake), name="fetcher-invalidations")
            tg.create_task(_serve_fetches(requests, fetcher, intake), name="fetcher-requests")
            tg.create_task(fetcher.run_refresher(), name="fetcher-refresher")
            if settings.cache_enabled:
                tg.create_task(fetcher.run_cleanup(settings.cache_cleanup_interval), name="fetcher-cleanup")
            await targets.caught_up.wait()
            log.info("fetcher warm", extra={"tracked": len(fetcher.tracker)})
            if runtime.leases is not None:
                tg.create_task(runtime.run_leases(), name="fetcher-leases")
                tg.create_task(_refresh_gained(runtime.leases, fetcher, settings.partitions), name="fetcher-gained")
            if settings.fetch_interval > 0:
                tg.create_task(fetcher.run_background(settings.fetch_interval), name="fetcher-background")
    finally:
        with contextlib.suppress(nats.errors.Error):
            await requests.unsubscribe()
        await fetcher.aclose()


async def _follow_targets(follower: streams.Follower, fetcher: Fetcher, runtime: Runtime, intake: Intake) -> None:
    async for msg in follower:
        message = intake.accept(msg.subject, msg.data, decoder=messages.targets_decoder)
        if message is None:
            continue
        if isinstance(message, Target):
            is_new = fetcher.tracker.get(message.namespace, message.name) is None
            fetcher.track(message)
            if is_new and follower.caught_up.is_set():
                fetcher.refresh(message.namespace, message.name)  # a new VA gets data at once
            continue
        forgotten = fetcher.forget(message.namespace, message.name)
        if forgotten is not None and fetcher.owns is not None and not fetcher.owns(forgotten):
            continue  # its partition's owner says it
        tombstone = MetricsDeleted(namespace=message.namespace, name=message.name, at=message.at)
        try:
            await runtime.publish(
                runtime.subjects.metrics(message.namespace, message.name),
                tombstone,
                msg_id=f"metrics-deleted:{message.namespace}/{message.name}:{message.at.isoformat()}",
            )
            telemetry.SNAPSHOTS.labels(status="deleted").inc()
        except Exception as exc:  # the tombstone is best effort: the scaler also sees the target's
            log.warning("could not publish metrics tombstone: %s", exc, extra={"subject": msg.subject})


async def _refresh_gained(leases: Leases, fetcher: Fetcher, partitions: int) -> None:
    """A partition this replica gains gets fresh snapshots at once, not at the next cycle."""
    changes = leases.subscribe()
    held: frozenset[str] = frozenset()
    while True:
        owned = await changes.get()
        gained, held = owned - held, owned
        for target in fetcher.tracker.all():
            if str(partition_of(target.namespace, target.model_id, partitions)) in gained:
                fetcher.refresh(target.namespace, target.name)


async def _follow_invalidations(follower: streams.Follower, fetcher: Fetcher, intake: Intake) -> None:
    async for msg in follower:
        message = intake.accept(msg.subject, msg.data, decoder=messages.events_decoder)
        if not isinstance(message, Invalidation):
            continue  # rejected (a decision on this subject is, too)
        telemetry.INVALIDATIONS.labels(reason=message.reason).inc()
        log.info(
            "invalidating cached metrics",
            extra={
                "namespace": message.namespace, "vaName": message.name, "reason": message.reason,
                "generation": message.deployment_generation,
            },
        )
        fetcher.invalidate(message.namespace, message.name, generation=message.deployment_generation)


async def _serve_fetches(sub: Subscription, fetcher: Fetcher, intake: Intake) -> None:
    async with asyncio.TaskGroup() as tg:
        async for msg in sub.messages:
            tg.create_task(_answer(msg, fetcher, intake))


async def _answer(msg: Msg, fetcher: Fetcher, intake: Intake) -> None:
    """Answer one request: an empty body is a plain request for the subject's VA, anything else must
    be a FetchRequest for that same VA (a rejected one is answered with an unavailable snapshot)."""
    try:
        ref = intake.subjects.parse(msg.subject)
    except SubjectError as exc:
        intake.reject(msg.subject, MessageError("invalid_subject", str(exc)))
        return
    snapshot: MetricsSnapshot | None = None
    fresh = False
    if msg.data:
        request = intake.accept(msg.subject, msg.data, decoder=messages.fetch_decoder)
        if isinstance(request, FetchRequest):
            fresh = request.fresh
        else:
            snapshot = unavailable(va_key(ref.namespace, ref.name), reason="malformed fetch request (rejected)")
            telemetry.FETCH_REQUESTS.labels(answer="rejected").inc()
    target = fetcher.tracker.get(ref.namespace, ref.name)
    if target is not None and fetcher.owns is not None and not fetcher.owns(target):
        telemetry.FETCH_REQUESTS.labels(answer="not_mine").inc()
        return  # the replica holding its partition answers
    if snapshot is None:
        snapshot, answer = await fetcher.fetch(ref.namespace, ref.name, fresh=fresh)
        telemetry.FETCH_REQUESTS.labels(answer=answer).inc()
    if msg.reply:
        with contextlib.suppress(nats.errors.Error):
            await msg.respond(messages.encode(snapshot))
