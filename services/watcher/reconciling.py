"""From index changes to messages: the sink of every watch, and the loop that publishes what changed.

Watch loops feed objects into the :class:`~services.watcher.index.ClusterIndex` and mark the VAs they
affect. The reconcile loop (after a short debounce that folds bursts, such as pods turning ready, into
one pass) rebuilds the target of each marked VA, compares it with the last one it published, and puts
into the outbox:

- the new ``Target`` when its content changed (``at`` aside), or ``TargetDeleted`` when the VA is gone;
- one ``Invalidation`` per reason :mod:`~services.watcher.changes` finds, plus ``relist`` for every VA
  of a namespace whose objects were re-listed after a 410.

Nothing is published until every watch has finished its first list, so a half-built index never shows.
The first pass republishes every VA (consumers treat identical targets as no-ops) and compares against
``baseline``, the targets already on the stream from a previous run: only what changed while the
watcher was away is invalidated, and VAs deleted meanwhile get their tombstone. Without a baseline
every VA gets ``relist``, the honest answer to "something may have changed".

Several watchers (docs/design.md §11): only the one holding the ``watcher`` lease publishes. The others
stand by (``active`` false): their watches keep the index warm, their reconcile loop publishes nothing.
:meth:`Reconciler.take_over` makes a standby the publisher the way a restart would — a first pass over
every VA against what the stream holds now (``baseline``) — and :meth:`Reconciler.stand_by` stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from services.watcher import changes, telemetry
from services.watcher.index import ClusterIndex, ObjectKind, convert
from services.watcher.kubeobjects import object_key
from services.watcher.publishing import Outbox
from shared import messages
from shared import subjects as subjects_mod
from shared.messages import Invalidation, InvalidationReason, Target, TargetDeleted, VAKey, utcnow
from shared.subjects import Subjects

log = logging.getLogger("wva.watcher")

StreamId = tuple[ObjectKind, str | None]


class Reconciler:
    def __init__(
        self,
        index: ClusterIndex,
        outbox: Outbox,
        subjects: Subjects,
        *,
        streams: Iterable[StreamId],
        baseline: dict[VAKey, Target] | None,
        debounce: float = 0.05,
        active: bool = True,
    ) -> None:
        self.index = index
        self.outbox = outbox
        self.subjects = subjects
        self.published: dict[VAKey, Target] = dict(baseline or {})
        self._baseline_known = baseline is not None
        self._unlisted: set[StreamId] = set(streams)
        self._dirty: set[VAKey] = set()
        self._relist: set[VAKey] = set()
        self._republish: set[VAKey] = set()
        self._wakeup = asyncio.Event()
        self._debounce = debounce
        self.synced = asyncio.Event()  # the first pass (every VA) has been queued
        self.indexed = asyncio.Event()  # every first list is in: the index is complete
        self.active = active

    # ---------------------------------------------------------------- sink of the watches

    def listed(self, kind: ObjectKind, namespace: str | None, items: list[dict[str, Any]], *, expired: bool) -> None:
        affected = self.index.replace(kind, namespace, [convert(kind, obj) for obj in items])
        stream = (kind, namespace)
        if stream in self._unlisted:
            self._unlisted.discard(stream)
            if not self._unlisted:  # the index is complete: the first pass covers every VA
                self.indexed.set()
                everything = set(self.index.vas) | set(self.published)
                self._mark(everything, republish=True, relist=not self._baseline_known)
                self._wakeup.set()  # even with no VA at all: the first pass is what makes us ready
            return
        in_scope = self.index.vas_in(namespace) | {k for k in self.published if namespace is None or k[0] == namespace}
        self._mark(affected | in_scope, republish=True, relist=expired)

    def changed(self, kind: ObjectKind, event_type: str, obj: dict[str, Any]) -> None:
        telemetry.EVENTS.labels(kind=kind, type=event_type).inc()
        if event_type == "DELETED":
            affected = self.index.delete(kind, *object_key(obj))
        else:
            affected = self.index.upsert(kind, convert(kind, obj))
        self._mark(affected)

    def republish_all(self) -> None:
        """Publish every VA's target again (the targets stream was re-created empty)."""
        self._mark(set(self.index.vas) | set(self.published), republish=True)

    def take_over(self, baseline: dict[VAKey, Target] | None) -> None:
        """Publish from now on, starting with a first pass against ``baseline`` (what the stream holds)."""
        self.published = dict(baseline or {})
        self.active = True
        self._dirty, self._relist, self._republish = set(), set(), set()  # what standing by marked
        self._mark(set(self.index.vas) | set(self.published), republish=True, relist=baseline is None)
        self._wakeup.set()

    def stand_by(self) -> None:
        """Publish nothing more (another watcher holds the lease); the index stays warm."""
        self.active = False
        self.outbox.clear()

    def _mark(self, keys: set[VAKey], *, republish: bool = False, relist: bool = False) -> None:
        self._dirty |= keys
        if republish:
            self._republish |= keys
        if relist:
            self._relist |= keys
        if keys:
            self._wakeup.set()

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self._debounce)
            self._wakeup.clear()
            if self._unlisted or not self.active:
                continue  # keep collecting until every first list is in (and, standing by, until a take-over)
            self.reconcile()
            self.synced.set()

    def reconcile(self) -> None:
        dirty, relist, republish = self._dirty, self._relist, self._republish
        self._dirty, self._relist, self._republish = set(), set(), set()
        at = utcnow()
        for key in sorted(dirty):
            try:
                self._reconcile_one(key, at=at, relist=key in relist, republish=key in republish)
            except subjects_mod.SubjectError as exc:  # Kubernetes names always encode; say so if not
                log.error("cannot publish VA %s/%s: %s", key[0], key[1], exc)
        telemetry.MANAGED_VAS.set(len(self.index.vas))

    def _reconcile_one(self, key: VAKey, *, at: Any, relist: bool, republish: bool) -> None:
        namespace, name = key
        new = self.index.target(key, at=at)
        old = self.published.get(key)
        reasons: list[InvalidationReason] = list(changes.reasons(old, new))
        if relist and new is not None:
            reasons.append("relist")
        if new is None:
            if old is not None:
                self.outbox.put(key, self.subjects.targets(namespace, name), TargetDeleted(namespace=namespace, name=name, at=at))
                del self.published[key]
                telemetry.TARGETS_PUBLISHED.inc()
        elif republish or not messages.same_content(old, new):
            self.outbox.put(key, self.subjects.targets(namespace, name), new)
            self.published[key] = new
            telemetry.TARGETS_PUBLISHED.inc()
        basis = new or old
        assert basis is not None or not reasons
        for reason in reasons:
            assert basis is not None
            self.outbox.put(
                key,
                self.subjects.invalidate(namespace, name),
                Invalidation(
                    namespace=namespace,
                    name=name,
                    at=at,
                    reason=reason,
                    deployment_generation=basis.deployment_generation,
                    template_hash=basis.template_hash,
                ),
            )
            telemetry.INVALIDATIONS.labels(reason=reason).inc()
            log.info(
                "invalidated %s/%s: %s",
                namespace,
                name,
                reason,
                extra={
                    "namespace": namespace,
                    "va": name,
                    "reason": reason,
                    "deployment_generation": basis.deployment_generation,
                    "template_hash": basis.template_hash,
                },
            )
