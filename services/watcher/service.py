"""The watcher's shell: a Kubernetes client, the last published targets, the watches, the reconciler and
the outbox, run together in one ``TaskGroup`` under :func:`shared.lifecycle.serve`.

Readiness (``/readyz`` check ``synced``) turns true once the first pass over every VA is published.

Several watchers (``WVA_LEASE_BACKEND`` nats or kubernetes, docs/design.md §11): every one lists and watches (a hot
standby), only the one holding the ``watcher`` lease publishes. A standby is ready once its index is
complete; when it gains the lease it reads what the stream holds and publishes a first pass against it,
as a restarted watcher does; each publish is fenced (the lease must be valid with time to spare), and
a watcher that loses the lease drops what it had not published yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import cast

import msgspec
import nats.errors
from nats.js import JetStreamContext

from services.watcher import index as index_mod
from services.watcher import watching
from services.watcher.publishing import Fenced, Outbox
from services.watcher.reconciling import Reconciler
from services.watcher.settings import WatcherSettings
from shared import kube, messages, partitions, streams
from shared.intake import Intake
from shared.leases import Leases
from shared.lifecycle import Runtime
from shared.messages import Target, VAKey
from shared.subjects import SubjectKind, Subjects
from shared.variantautoscaling import va_label_selector

log = logging.getLogger("wva.watcher")

BASELINE_TIMEOUT = 10.0


def in_scope(target: Target, settings: WatcherSettings) -> bool:
    """Whether a target on the stream is one this watcher is responsible for."""
    namespaces = settings.watch_namespaces
    return (not namespaces or target.namespace in namespaces) and target.controller_instance == (
        settings.controller_instance or ""
    )


async def read_published(
    js: JetStreamContext, subjects: Subjects, settings: WatcherSettings, *, timeout: float = BASELINE_TIMEOUT
) -> dict[VAKey, Target] | None:
    """The last target of every VA in scope on the targets stream; None when it could not be read."""
    found: dict[VAKey, Target] = {}
    follower = streams.Follower(js, subjects.wildcard(SubjectKind.TARGETS), start="last_per_subject")
    intake = Intake(subjects)

    async def consume() -> None:
        async for msg in follower:
            decoded = intake.accept(msg.subject, msg.data, decoder=messages.targets_decoder)
            if decoded is None:
                continue
            key = VAKey((decoded.namespace, decoded.name))
            if isinstance(decoded, Target):
                if in_scope(decoded, settings):
                    found[key] = decoded
            else:
                found.pop(key, None)

    task = asyncio.create_task(consume(), name="watcher-baseline")
    try:
        async with asyncio.timeout(timeout):
            waiter = asyncio.create_task(follower.caught_up.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        if task.done():
            task.result()  # raise what stopped it
    except Exception as exc:
        log.warning("could not read the published targets (%s); every VA gets a relist invalidation", exc)
        return None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return found


async def main(runtime: Runtime) -> None:
    settings = cast(WatcherSettings, runtime.settings)
    runtime.health.set("synced", False)
    namespaces: list[str | None] = list(settings.watch_namespaces) or [None]
    leases = runtime.leases

    async def publish(subject: str, message: msgspec.Struct, msg_id: str) -> object:
        if leases is not None and not leases.valid(partitions.WATCHER):
            raise Fenced("this watcher does not hold the watcher lease")
        # The outbox retries; Runtime.publish re-creates lost streams and lets tombstones expire.
        return await runtime.publish(subject, message, msg_id=msg_id, attempts=1, timeout=settings.publish_timeout)

    # A standby reads what the stream holds when it takes over, not now.
    baseline = await read_published(runtime.js, runtime.subjects, settings) if leases is None else None
    index = index_mod.ClusterIndex(controller_instance=settings.controller_instance)
    outbox = Outbox(publish, backoff_max=settings.publish_backoff_max)
    reconciler = Reconciler(
        index,
        outbox,
        runtime.subjects,
        streams=[(kind, ns) for kind in index_mod.KINDS for ns in namespaces],
        baseline=baseline,
        debounce=settings.debounce,
        active=leases is None,
    )
    api = await kube.api_client(settings.kubeconfig, long_lived_connections=len(index_mod.KINDS) * len(namespaces))
    async with api:
        watches = watching.watches(
            api,
            reconciler,
            settings,
            namespaces=namespaces,
            va_label_selector=va_label_selector(settings.controller_instance),
        )
        log.info(
            "watching %s in %s",
            ", ".join(index_mod.KINDS),
            ", ".join(settings.watch_namespaces) or "all namespaces",
            extra={
                "namespaces": list(settings.watch_namespaces),
                "controller_instance": settings.controller_instance or "",
                "baseline_targets": -1 if baseline is None else len(baseline),
            },
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(outbox.run(), name="watcher-outbox")
            tg.create_task(reconciler.run(), name="watcher-reconciler")
            tg.create_task(_republish_when_recreated(runtime, reconciler), name="watcher-targets-stream")
            for w in watches:
                tg.create_task(w.run(), name=f"watch-{w.kind}-{w.namespace or 'all'}")
            if leases is not None:
                await reconciler.indexed.wait()
                runtime.health.set("synced", True)
                log.info("index complete: standing by for the watcher lease", extra={"vas": len(index.vas)})
                tg.create_task(runtime.run_leases(), name="watcher-leases")
                tg.create_task(_publish_while_leased(runtime, leases, reconciler, settings), name="watcher-lease")
                return
            await reconciler.synced.wait()
            await outbox.wait_idle()
            runtime.health.set("synced", True)
            log.info(
                "first pass published: %d VAs", len(index.vas), extra={"vas": len(index.vas)}
            )


async def _publish_while_leased(
    runtime: Runtime, leases: Leases, reconciler: Reconciler, settings: WatcherSettings
) -> None:
    """Take over publishing when this watcher gains the lease; stand by again when it loses it."""
    changes = leases.subscribe()
    while True:
        holds = partitions.WATCHER in await changes.get()
        if holds and not reconciler.active:
            baseline = await read_published(runtime.js, runtime.subjects, settings)
            reconciler.take_over(baseline)
            log.info(
                "holding the watcher lease: publishing", extra={"baseline_targets": -1 if baseline is None else len(baseline)}
            )
        elif not holds and reconciler.active:
            reconciler.stand_by()
            log.warning("lost the watcher lease: standing by")


async def _republish_when_recreated(runtime: Runtime, reconciler: Reconciler) -> None:
    """The targets stream is the cluster's state for every consumer that starts: when it comes back
    empty (a NATS restart with a wiped store, a deleted stream), publish every target again."""
    name = runtime.subjects.stream_name(streams.TARGETS)
    known = None
    while True:
        try:
            created = (await runtime.js.stream_info(name)).created
        except (nats.errors.Error, TimeoutError):
            created = None  # missing or NATS away: Runtime re-creates it, the next look compares
        if created is not None:
            if known is not None and created != known:
                log.warning("the targets stream was re-created; republishing every target", extra={"stream": name})
                reconciler.republish_all()
            known = created
        await asyncio.sleep(runtime.settings.stream_check_interval)
