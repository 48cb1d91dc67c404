"""Leases in a NATS KV bucket (``WVA_LEASE_BACKEND=nats``, docs/design.md §11).

The bucket (``WVA_LEASES``, default ``<PREFIX>_LEASES``) keeps one value per key (history 1), drops a
key ``WVA_LEASE_TTL`` after its last write (the bucket's age limit: the server expires keys, so an
expired key is simply gone) and has ``WVA_STREAM_REPLICAS`` replicas. A missing bucket (a NATS restart
with an empty store) is re-created at the next round.

Exceptions: none of its own; a refused write is :class:`shared.leasestore.LeaseConflict`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from shared.leasestore import Entry, LeaseConflict, Revision, decode_value

log = logging.getLogger("wva.leases")


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


class NatsLeaseStore:
    """:class:`shared.leasestore.LeaseStore` on a KV bucket."""

    def __init__(self, nc: Client, *, bucket: str, ttl: float, replicas: int = 1) -> None:
        self.bucket = bucket
        self._ttl = ttl
        self._replicas = replicas
        # Every request answers well within a renewal period, or counts as failed.
        self._js = nc.jetstream(timeout=min(2.0, ttl / 3))
        self._kv: KeyValue | None = None

    async def ensure(self) -> None:
        if self._kv is not None:
            return
        try:
            kv = await self._js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            try:
                kv = await self._js.create_key_value(
                    bucket=self.bucket, history=1, ttl=self._ttl, replicas=self._replicas,
                    description="wva leases (docs/design.md §11)",
                )
                log.info("created lease bucket %s", self.bucket, extra={"bucket": self.bucket})
            except nats.js.errors.BadRequestError:
                kv = await self._js.key_value(self.bucket)  # another replica created it meanwhile
        info = await self._js.stream_info(f"KV_{self.bucket}")
        config = info.config
        if round(config.max_age or 0.0, 3) != round(self._ttl, 3) or config.num_replicas != self._replicas:
            await self._js.update_stream(dataclasses.replace(config, max_age=self._ttl, num_replicas=self._replicas))
            log.info("updated lease bucket %s (ttl, replicas)", self.bucket, extra={"bucket": self.bucket})
        self._kv = kv

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, nats.js.errors.NotFoundError | nats.js.errors.NoStreamResponseError):
            self._kv = None  # the bucket is gone: re-create it next round

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise nats.js.errors.BucketNotFoundError
        return self._kv

    async def create(self, key: str, value: str) -> Revision:
        try:
            return await self.kv.create(key, value.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            raise LeaseConflict(key) from None

    async def update(self, key: str, value: str, *, last: Revision) -> Revision:
        try:
            return await self.kv.update(key, value.encode(), last=int(last))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise LeaseConflict(key) from None

    async def delete(self, key: str, *, last: Revision) -> None:
        try:
            await self.kv.delete(key, last=int(last))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise LeaseConflict(key) from None

    async def get(self, key: str) -> Entry | None:
        try:
            item = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return Entry(key, decode_value(item.value), item.revision or 0)

    async def read(self, service: str) -> dict[str, Entry]:
        entries = await read_bucket(self._js, self.kv, self.bucket, keys=f"{service}.*")
        entries.update(await read_bucket(self._js, self.kv, self.bucket, keys=f"members.{service}.*"))
        return entries
