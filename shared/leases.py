"""Leases and membership: which replica of a service acts on which partition (docs/design.md §11,
docs/deployment.md "Several replicas"). One round logic, whatever keeps the leases: a NATS KV bucket
(:mod:`shared.natsleases`) or Kubernetes Lease objects (:mod:`shared.kubeleases`), both behind
:class:`shared.leasestore.LeaseStore`. Keys:

- ``<service>.<partition>``: the identity of the replica that holds the partition;
- ``members.<service>.<identity>``: a live replica of the service.

Every renewal period (a third of the TTL) a replica plays one :meth:`Leases.round`:

1. it renews its member key, then every lease it holds, each with update-if-revision-matches; a
   renewal the store refuses (the key expired, or another replica holds it now) loses that lease
   there and then;
2. it reads the live keys (an expired key is not read), counts the live members, and follows
   :func:`shared.partitions.plan`: create-if-absent on free partitions up to its fair share,
   delete-if-revision on what it holds above it (only what it has held a whole period).

Fencing: :meth:`Leases.valid` is true only while the lease's last renewal was *sent* less than
``TTL - TTL/3`` ago, so a replica that cannot renew (the store away, the process stopped) stops acting
at least a renewal period before its key can expire and another replica take the partition. Services
ask it right before they act (the scaler before each PATCH).

Values read from the store are untrusted, like any message: a value that is not an identity is counted
in ``wva_messages_rejected_total{subject_kind="leases"}`` and logged; its key is held by nobody we know
and is not free either (it expires on its own). Store trouble never leaves :meth:`Leases.run`: the
round is logged, counted and tried again, and ``healthy`` (the ``leases`` readiness check) turns false
while the store cannot be reached.

Exceptions: none of its own (see above).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import Counter, Gauge

from shared import partitions as partitioning
from shared.leasestore import Entry, LeaseConflict, LeaseStore, Revision
from shared.redaction import redact

log = logging.getLogger("wva.leases")

CHANGES: Final = Counter(
    "wva_lease_changes_total", "Leases acquired, released and lost, by service", ["service", "change"]
)
HELD: Final = Gauge("wva_leases_held", "Partitions this replica holds a lease on", ["service"])
ROUND_FAILURES: Final = Counter(
    "wva_lease_round_failures_total", "Lease rounds that could not reach the store", ["service"]
)


def make_identity(name: str | None = None) -> str:
    """This replica's identity: its pod name (``HOSTNAME`` in a container) and a random suffix, so a
    restarted pod of the same name is a new member."""
    base = (name or os.environ.get("HOSTNAME") or socket.gethostname() or "wva").lower()
    base = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")[:50].strip("-") or "wva"
    return f"{base}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class _Held:
    revision: Revision
    since: float  # when acquired (clock)
    renewed: float  # when the last write that succeeded was sent (clock)


class Leases:
    """One replica's leases on the partitions of one service."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        service: str,
        identity: str,
        partitions: Sequence[str],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.identity = identity
        self.partitions = tuple(partitions)
        self.ttl = ttl
        self.period = ttl / 3
        self._clock = clock
        self.store = store
        self._held: dict[str, _Held] = {}
        self._member: Revision | None = None
        self._listeners: list[asyncio.Queue[frozenset[str]]] = []
        self._ok_at = float("-inf")
        self._failing = False
        self.members = 0
        self.holders: dict[str, str | None] = {}  # partition -> holder, as last read

    # ------------------------------------------------------------------ what services ask

    @property
    def owned(self) -> frozenset[str]:
        """The partitions held after the last round (see :meth:`valid` before acting)."""
        return frozenset(self._held)

    def valid(self, partition: str) -> bool:
        """Held, and renewed recently enough that no other replica can hold it (fencing)."""
        held = self._held.get(partition)
        return held is not None and self._clock() - held.renewed < self.ttl - self.period

    def expires_in(self, partition: str) -> float:
        """Seconds this replica may still act on ``partition`` (0 when it may not)."""
        held = self._held.get(partition)
        if held is None:
            return 0.0
        return max(0.0, self.ttl - self.period - (self._clock() - held.renewed))

    @property
    def healthy(self) -> bool:
        """The last round that reached the store is less than a TTL old."""
        return self._clock() - self._ok_at < self.ttl

    def subscribe(self) -> asyncio.Queue[frozenset[str]]:
        """A queue that receives the owned partitions now and after every change."""
        queue: asyncio.Queue[frozenset[str]] = asyncio.Queue()
        queue.put_nowait(self.owned)
        self._listeners.append(queue)
        return queue

    def report(self) -> dict[str, object]:
        """For ``/readyz``: who this replica is and what it holds."""
        return {
            "identity": self.identity,
            "service": self.service,
            "held": sorted(self._held, key=_order),
            "members": self.members,
            "healthy": self.healthy,
        }

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """A round every renewal period, measured start to start, forever."""
        while True:
            started = self._clock()
            await self.round()
            await asyncio.sleep(max(0.0, self.period - (self._clock() - started)))

    async def round(self) -> None:
        before = self.owned
        now = self._clock()
        try:
            await self.store.ensure()
            await self._renew(now)
            await self._rebalance(await self.store.read(self.service), now)
        except Exception as exc:  # store trouble of any kind: try again next round; fencing is by time
            ROUND_FAILURES.labels(service=self.service).inc()
            self.store.failed(exc)
            if not self._failing:
                log.warning(
                    "lease round failed: %s", redact(str(exc) or type(exc).__name__),
                    extra={"service": self.service, "identity": self.identity},
                )
            self._failing = True
        else:
            self._ok_at = now
            if self._failing:
                log.info("lease store reachable again", extra={"service": self.service})
            self._failing = False
        finally:
            self._announce(before)

    async def release(self) -> None:
        """Give every lease back and leave (a clean shutdown): others take over at their next round."""
        held, self._held = self._held, {}
        self._announce(frozenset(held))
        for partition, lease in held.items():
            with contextlib.suppress(Exception):
                await self.store.delete(self._key(partition), last=lease.revision)
            CHANGES.labels(service=self.service, change="released").inc()
        if self._member is not None:
            with contextlib.suppress(Exception):
                await self.store.delete(self._member_key, last=self._member)
            self._member = None
        log.info("released every lease", extra={"service": self.service, "released": len(held)})

    # ------------------------------------------------------------------ steps

    @property
    def _member_key(self) -> str:
        return f"members.{self.service}.{self.identity}"

    def _key(self, partition: str) -> str:
        return f"{self.service}.{partition}"

    async def _renew(self, now: float) -> None:
        # The member key first, so it never outlives this replica's leases: the others count members.
        store, value = self.store, self.identity
        if self._member is not None:
            try:
                self._member = await store.update(self._member_key, value, last=self._member)
            except LeaseConflict:
                self._member = None  # expired while we could not renew it: announce ourselves again
        if self._member is None:
            try:
                self._member = await store.create(self._member_key, value)
            except LeaseConflict:  # ours already: a write whose answer was lost
                current = await store.get(self._member_key)
                if current is not None:  # (None: expired since: created at the next round)
                    self._member = await store.update(self._member_key, value, last=current.revision)
        results = await asyncio.gather(
            *(self._renew_one(p, lease, now) for p, lease in list(self._held.items())), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result

    async def _renew_one(self, partition: str, lease: _Held, now: float) -> None:
        try:
            revision = await self.store.update(self._key(partition), self.identity, last=lease.revision)
        except LeaseConflict:
            if self._held.get(partition) is lease:
                del self._held[partition]
                CHANGES.labels(service=self.service, change="lost").inc()
                log.warning(
                    "lost the lease on %s partition %s (expired or taken)", self.service, partition,
                    extra={"service": self.service, "partition": partition},
                )
            return
        # Any other failure leaves the lease unrenewed: valid() ends it in time if it is really gone.
        lease.revision, lease.renewed = revision, now

    async def _rebalance(self, entries: dict[str, Entry], now: float) -> None:
        prefix, members_prefix = f"{self.service}.", f"members.{self.service}."
        holders: dict[str, str | None] = {}
        members = 0
        for key, entry in entries.items():
            if key.startswith(members_prefix):
                members += entry.holder is not None and entry.holder == key[len(members_prefix):]
            elif key.startswith(prefix) and key[len(prefix):] in self.partitions:
                partition = key[len(prefix):]
                holders[partition] = entry.holder
                if entry.holder == self.identity and partition not in self._held:
                    # Ours after all (a renewal whose answer was lost): take it back, if still ours.
                    with contextlib.suppress(LeaseConflict):
                        revision = await self.store.update(key, self.identity, last=entry.revision)
                        self._held[partition] = _Held(revision=revision, since=now, renewed=now)
        self.members = max(members, 1)
        self.holders = holders
        moves = partitioning.plan(
            identity=self.identity,
            held={p: lease.since for p, lease in self._held.items()},
            free=[p for p in self.partitions if p not in holders],
            members=self.members,
            partitions=len(self.partitions),
            now=now,
            settle=self.period,
        )
        for partition in moves.release:
            lease = self._held.pop(partition)  # stop acting first, then give it back
            CHANGES.labels(service=self.service, change="released").inc()
            with contextlib.suppress(LeaseConflict):
                await self.store.delete(self._key(partition), last=lease.revision)
            holders.pop(partition, None)
        for partition in moves.acquire:
            try:
                revision = await self.store.create(self._key(partition), self.identity)
            except LeaseConflict:
                continue  # another replica was quicker
            self._held[partition] = _Held(revision=revision, since=now, renewed=now)
            holders[partition] = self.identity
            CHANGES.labels(service=self.service, change="acquired").inc()

    def _announce(self, before: frozenset[str]) -> None:
        owned = self.owned
        HELD.labels(service=self.service).set(len(owned))
        if owned == before:
            return
        gained, lost = owned - before, before - owned
        log.info(
            "%s partitions: %d held (+%s -%s)", self.service, len(owned),
            ",".join(sorted(gained, key=_order)) or "none", ",".join(sorted(lost, key=_order)) or "none",
            extra={"service": self.service, "identity": self.identity, "held": sorted(owned, key=_order)},
        )
        for queue in self._listeners:
            queue.put_nowait(owned)


def _order(partition: str) -> tuple[int, str]:
    return (int(partition), "") if partition.isdigit() else (1 << 30, partition)
