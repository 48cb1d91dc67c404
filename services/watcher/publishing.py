"""A latest-state-per-VA outbox in front of JetStream.

The reconciler puts messages; one publisher task sends them with acks and a ``Nats-Msg-Id`` (reused on
retries, so a publish that reached the server before its ack was lost is stored once). Per VA the outbox
holds at most one target message (``Target`` or ``TargetDeleted``) and one invalidation per reason: a
newer message of the same slot replaces an unsent older one, so when NATS is away the outbox keeps
only the latest state and publishes it when NATS returns. Messages of one VA go out in the order they
were put, one at a time, so nothing stale is ever sent after something newer; different VAs go out
concurrently.

A failed publish (NATS down, JetStream not answering) keeps the message and retries after a bounded,
jittered backoff, forever: NATS coming back is the only way forward, and the state stays bounded by the
number of VAs.

With several watchers (docs/design.md §11) the publish function raises :class:`Fenced` when this
watcher no longer holds the lease with time to spare: what is pending is dropped (the lease's holder
publishes its own view), nothing is retried.

Exceptions::

    Exception
    ├── PublishFailed   some messages could not be published this round (kept, retried)
    └── Fenced          this watcher may not publish (not holding the ``watcher`` lease)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import msgspec
import nats.errors
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from services.watcher import telemetry
from shared.messages import Invalidation, VAKey, kind_of

log = logging.getLogger("wva.watcher.publishing")

Publish = Callable[[str, msgspec.Struct, str], Awaitable[object]]
TRANSIENT: Final = (nats.errors.Error, TimeoutError, OSError)
_CONCURRENCY: Final = 64


@dataclass(eq=False, slots=True)
class _Entry:
    slot: str  # "target" or "invalidation:<reason>"
    subject: str
    message: msgspec.Struct
    msg_id: str


class PublishFailed(Exception):
    """At least one message could not be published in this round; they stay queued."""


class Fenced(Exception):
    """This watcher does not hold the lease (or not with time to spare): it must not publish."""


class Outbox:
    def __init__(self, publish: Publish, *, backoff_min: float = 0.1, backoff_max: float = 5.0) -> None:
        self._publish = publish
        self._pending: dict[VAKey, list[_Entry]] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        prefix = uuid.uuid4().hex[:12]  # unique per process; the counter makes it unique per message
        self._ids = (f"{prefix}-{n}" for n in itertools.count())
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max

    # ---------------------------------------------------------------- producer side

    def put(self, key: VAKey, subject: str, message: msgspec.Struct) -> None:
        slot = f"invalidation:{message.reason}" if isinstance(message, Invalidation) else "target"
        entries = self._pending.setdefault(key, [])
        entries[:] = [e for e in entries if e.slot != slot]
        entries.append(_Entry(slot, subject, message, next(self._ids)))
        self._idle.clear()
        self._wakeup.set()
        telemetry.OUTBOX_PENDING.set(self.pending)

    def clear(self) -> None:
        """Drop everything pending (another watcher publishes now)."""
        self._pending.clear()
        self._idle.set()
        telemetry.OUTBOX_PENDING.set(0)

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._pending.values())

    async def wait_idle(self) -> None:
        """Until everything put so far has been published."""
        await self._idle.wait()

    # ---------------------------------------------------------------- publisher side

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(PublishFailed),
                wait=wait_exponential_jitter(multiplier=self._backoff_min, max=self._backoff_max),
                before_sleep=self._log_retry,
            ):
                with attempt:
                    await self._flush()
            if not self._pending:
                self._idle.set()
            telemetry.OUTBOX_PENDING.set(self.pending)

    async def _flush(self) -> None:
        semaphore = asyncio.Semaphore(_CONCURRENCY)

        async def one(key: VAKey) -> None:
            async with semaphore:
                await self._flush_key(key)

        while self._pending:
            results = await asyncio.gather(*(one(k) for k in list(self._pending)), return_exceptions=True)
            if any(isinstance(r, Fenced) for r in results):
                log.warning("not the publishing watcher any more: dropping %d pending message(s)", self.pending)
                self.clear()
                return
            failures = [r for r in results if isinstance(r, BaseException)]
            for failure in failures:
                if not isinstance(failure, TRANSIENT):
                    raise failure
            if failures:
                telemetry.PUBLISH_FAILURES.inc(len(failures))
                raise PublishFailed(f"{len(failures)} VA(s) not published: {failures[0]!r}")

    async def _flush_key(self, key: VAKey) -> None:
        while entries := self._pending.get(key):
            entry = entries[0]
            await self._publish(entry.subject, entry.message, entry.msg_id)
            telemetry.PUBLISHED.labels(kind=kind_of(entry.message)).inc()
            # While we awaited, a newer message of the same slot may have replaced this one.
            current = self._pending.get(key)
            if current is not None and entry in current:
                current.remove(entry)
            if current is not None and not current:
                del self._pending[key]
            telemetry.OUTBOX_PENDING.set(self.pending)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "publishing to NATS failed; keeping the latest state of %d VA(s) and retrying: %s",
            len(self._pending),
            exc,
            extra={"pending": self.pending, "attempt": state.attempt_number},
        )
