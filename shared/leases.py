"""Leases and membership in a NATS KV bucket: which replica of a service acts on which partition
(docs/design.md §11, docs/deployment.md "Several replicas").

The bucket (``WVA_LEASES``, default ``<PREFIX>_LEASES``) keeps one value per key (history 1), drops a
key ``WVA_LEASE_TTL`` after its last write (the bucket's age limit) and has ``WVA_STREAM_REPLICAS``
replicas. Keys:

- ``<service>.<partition>``: the identity of the replica that holds the partition;
- ``members.<service>.<identity>``: a live replica of the service.

Every renewal period (a third of the TTL) a replica plays one :meth:`Leases.round`:

1. it renews its member key, then every lease it holds, each with update-if-revision-matches; a
   renewal the server refuses (the key expired, or another replica holds it now) loses that lease
   there and then;
2. it reads the bucket (the live keys: an expired key is simply gone), counts the live members, and
   follows :func:`shared.partitions.plan`: create-if-absent on free partitions up to its fair share,
   delete-if-revision on what it holds above it (only what it has held a whole period).

Fencing: :meth:`Leases.valid` is true only while the lease's last renewal was *sent* less than
``TTL - TTL/3`` ago, so a replica that cannot renew (NATS away, the process stopped) stops acting at
least a renewal period before its key can expire and another replica take the partition. Services
ask it right before they act (the scaler before each PATCH).

A missing bucket (a NATS restart with an empty store) is re-created at the next round. Values read
from the bucket are untrusted, like any message: a value that is not an identity is counted in
``wva_messages_rejected_total{subject_kind="leases"}`` and logged; its key is held by nobody we know
and is not free either (it expires on its own). NATS trouble never leaves :meth:`Leases.run`: the round
is logged, counted and tried again, and ``healthy`` (the ``leases`` readiness check) turns false while
the bucket cannot be reached.

Exceptions: none of its own (see above).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge

from shared import partitions as partitioning
from shared.observability import count_rejected
from shared.redaction import redact

log = logging.getLogger("wva.leases")

CHANGES: Final = Counter(
    "wva_lease_changes_total", "Leases acquired, released and lost, by service", ["service", "change"]
)
HELD: Final = Gauge("wva_leases_held", "Partitions this replica holds a lease on", ["service"])
ROUND_FAILURES: Final = Counter(
    "wva_lease_round_failures_total", "Lease rounds that could not reach the bucket", ["service"]
)

_IDENTITY_RE: Final = re.compile(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_MAX_VALUE: Final = 64


def make_identity(name: str | None = None) -> str:
    """This replica's identity: its pod name (``HOSTNAME`` in a container) and a random suffix, so a
    restarted pod of the same name is a new member."""
    base = (name or os.environ.get("HOSTNAME") or socket.gethostname() or "wva").lower()
    base = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")[:50].strip("-") or "wva"
    return f"{base}-{secrets.token_hex(3)}"


def is_identity(text: str) -> bool:
    return bool(_IDENTITY_RE.match(text))


def decode_value(value: bytes | None) -> str | None:
    """The identity a lease value names, or None (counted and logged) when it is not one."""
    raw = value or b""
    try:
        text = raw[: _MAX_VALUE + 1].decode()
    except UnicodeDecodeError:
        text = ""
    if len(raw) <= _MAX_VALUE and is_identity(text):
        return text
    count_rejected("leases", "invalid")
    log.warning("a lease value is not a replica identity (%d bytes); the key counts as held by nobody known", len(raw))
    return None


@dataclass(slots=True)
class _Held:
    revision: int
    since: float  # when acquired (clock)
    renewed: float  # when the last write that succeeded was sent (clock)


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    holder: str | None  # None: not an identity
    revision: int


async def read_bucket(js: JetStreamContext, kv: KeyValue, bucket: str, *, keys: str = ">") -> dict[str, Entry]:
    """Every live key matching ``keys`` with its holder. The stream says which subjects hold a message
    and a get reads each: no consumer is made (a KV watch would leave one behind for minutes)."""
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=prefix + keys)
    names = [subject[len(prefix):] for subject in info.state.subjects or {}]

    async def one(key: str) -> Entry | None:
        try:
            item = await kv.get(key, validate_keys=False)
        except nats.js.errors.KeyNotFoundError:  # deleted (a marker), or expired since the listing
            return None
        return Entry(key, decode_value(item.value), item.revision or 0)

    found = await asyncio.gather(*(one(key) for key in names))
    return {entry.key: entry for entry in found if entry is not None}


class Leases:
    """One replica's leases on the partitions of one service."""

    def __init__(
        self,
        nc: Client,
        *,
        bucket: str,
        service: str,
        identity: str,
        partitions: Sequence[str],
        ttl: float,
        replicas: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.identity = identity
        self.partitions = tuple(partitions)
        self.ttl = ttl
        self.period = ttl / 3
        self.bucket = bucket
        self._replicas = replicas
        self._clock = clock
        # Every request answers well within a renewal period, or counts as failed.
        self._js = nc.jetstream(timeout=min(2.0, self.period))
        self._kv: KeyValue | None = None
        self._held: dict[str, _Held] = {}
        self._member: int | None = None
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
        """The last round that reached the bucket is less than a TTL old."""
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
            kv = await self._bucket()
            await self._renew(kv, now)
            entries = await read_bucket(self._js, kv, self.bucket, keys=f"{self.service}.*")
            entries.update(await read_bucket(self._js, kv, self.bucket, keys=f"members.{self.service}.*"))
            await self._rebalance(kv, entries, now)
        except Exception as exc:  # NATS trouble of any kind: try again next round; fencing is by time
            ROUND_FAILURES.labels(service=self.service).inc()
            if isinstance(exc, nats.js.errors.NotFoundError | nats.js.errors.NoStreamResponseError):
                self._kv = None  # the bucket is gone: re-create it next round
            if not self._failing:
                log.warning(
                    "lease round failed: %s", redact(str(exc) or type(exc).__name__),
                    extra={"service": self.service, "identity": self.identity},
                )
            self._failing = True
        else:
            self._ok_at = now
            if self._failing:
                log.info("lease bucket reachable again", extra={"service": self.service})
            self._failing = False
        finally:
            self._announce(before)

    async def release(self) -> None:
        """Give every lease back and leave (a clean shutdown): others take over at their next round."""
        held, self._held = self._held, {}
        self._announce(frozenset(held))
        kv = self._kv
        if kv is None:
            return
        for partition, lease in held.items():
            with contextlib.suppress(Exception):
                await kv.delete(self._key(partition), last=lease.revision)
            CHANGES.labels(service=self.service, change="released").inc()
        if self._member is not None:
            with contextlib.suppress(Exception):
                await kv.delete(self._member_key, last=self._member)
            self._member = None
        log.info("released every lease", extra={"service": self.service, "released": len(held)})

    # ------------------------------------------------------------------ steps

    async def _bucket(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        try:
            kv = await self._js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            try:
                kv = await self._js.create_key_value(
                    bucket=self.bucket, history=1, ttl=self.ttl, replicas=self._replicas,
                    description="wva leases (docs/design.md §11)",
                )
                log.info("created lease bucket %s", self.bucket, extra={"bucket": self.bucket})
            except nats.js.errors.BadRequestError:
                kv = await self._js.key_value(self.bucket)  # another replica created it meanwhile
        info = await self._js.stream_info(f"KV_{self.bucket}")
        config = info.config
        if round(config.max_age or 0.0, 3) != round(self.ttl, 3) or config.num_replicas != self._replicas:
            await self._js.update_stream(dataclasses.replace(config, max_age=self.ttl, num_replicas=self._replicas))
            log.info("updated lease bucket %s (ttl, replicas)", self.bucket, extra={"bucket": self.bucket})
        self._kv = kv
        return kv

    @property
    def _member_key(self) -> str:
        return f"members.{self.service}.{self.identity}"

    def _key(self, partition: str) -> str:
        return f"{self.service}.{partition}"

    async def _renew(self, kv: KeyValue, now: float) -> None:
        # The member key first, so it never outlives this replica's leases: the others count members.
        value = self.identity.encode()
        if self._member is not None:
            try:
                self._member = await kv.update(self._member_key, value, last=self._member)
            except nats.js.errors.KeyWrongLastSequenceError:
                self._member = None  # expired while we could not renew it: announce ourselves again
        if self._member is None:
            try:
                self._member = await kv.create(self._member_key, value)
            except nats.js.errors.KeyWrongLastSequenceError:  # ours already: a write whose answer was lost
                current = await kv.get(self._member_key)
                self._member = await kv.update(self._member_key, value, last=current.revision)
        results = await asyncio.gather(
            *(self._renew_one(kv, p, lease, now) for p, lease in list(self._held.items())), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result

    async def _renew_one(self, kv: KeyValue, partition: str, lease: _Held, now: float) -> None:
        try:
            revision = await kv.update(self._key(partition), self.identity.encode(), last=lease.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
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

    async def _rebalance(self, kv: KeyValue, entries: dict[str, Entry], now: float) -> None:
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
                    with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                        revision = await kv.update(key, self.identity.encode(), last=entry.revision)
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
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await kv.delete(self._key(partition), last=lease.revision)
            holders.pop(partition, None)
        for partition in moves.acquire:
            try:
                revision = await kv.create(self._key(partition), self.identity.encode())
            except nats.js.errors.KeyWrongLastSequenceError:
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
