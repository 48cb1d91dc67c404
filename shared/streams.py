"""JetStream streams (docs/design.md §3) and the helpers to create them and to follow them.

- ``<P>_TARGETS`` and ``<P>_METRICS`` keep the last value per subject (file storage), so a consumer
  that starts with ``DeliverPolicy.LAST_PER_SUBJECT`` is warm at once.
- ``<P>_EVENTS`` is a bounded log of invalidations and decisions.

:func:`ensure` creates or updates them and is a no-op when they already match; any service may call
it at start-up. :class:`Follower` replays (last value per subject, or only new messages) and then
follows live messages in order through an ordered consumer, which re-creates itself after a NATS
reconnect without losing its place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from shared.subjects import SubjectKind, Subjects

log = logging.getLogger("wva.streams")

TARGETS: Final = "TARGETS"
METRICS: Final = "METRICS"
EVENTS: Final = "EVENTS"

_DUPLICATE_WINDOW: Final = 120.0
_EVENTS_MAX_BYTES: Final = 1 << 30


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """The parts of a stream's configuration that wva owns."""

    replicas: int = 1
    events_max_age: float = 86400.0
    events_max_bytes: int = _EVENTS_MAX_BYTES


def definitions(subjects: Subjects, spec: StreamSpec) -> list[StreamConfig]:
    def last_value(suffix: str, kind: SubjectKind) -> StreamConfig:
        return StreamConfig(
            name=subjects.stream_name(suffix),
            subjects=[subjects.wildcard(kind)],
            retention=RetentionPolicy.LIMITS,
            max_msgs_per_subject=1,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE,
            num_replicas=spec.replicas,
            duplicate_window=_DUPLICATE_WINDOW,
        )

    return [
        last_value(TARGETS, SubjectKind.TARGETS),
        last_value(METRICS, SubjectKind.METRICS),
        StreamConfig(
            name=subjects.stream_name(EVENTS),
            subjects=[subjects.wildcard(SubjectKind.INVALIDATE), subjects.wildcard(SubjectKind.DECISIONS)],
            retention=RetentionPolicy.LIMITS,
            max_age=spec.events_max_age,
            max_bytes=spec.events_max_bytes,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE,
            num_replicas=spec.replicas,
            duplicate_window=_DUPLICATE_WINDOW,
        ),
    ]


_COMPARED: Final = (
    "subjects",
    "retention",
    "max_msgs_per_subject",
    "max_age",
    "max_bytes",
    "discard",
    "storage",
    "num_replicas",
    "duplicate_window",
)


def _differs(wanted: StreamConfig, current: StreamConfig) -> list[str]:
    diffs = []
    for name in _COMPARED:
        want, have = getattr(wanted, name), getattr(current, name)
        if want is None:
            continue
        if name == "subjects":
            want, have = sorted(want), sorted(have or [])
        elif isinstance(want, float) and have is not None:
            want, have = round(want, 3), round(float(have), 3)
        if want != have:
            diffs.append(name)
    return diffs


async def ensure(js: JetStreamContext, subjects: Subjects, spec: StreamSpec) -> list[str]:
    """Create missing streams and update drifted ones; returns what it did (empty when nothing)."""
    done: list[str] = []
    for wanted in definitions(subjects, spec):
        assert wanted.name is not None
        try:
            info = await js.stream_info(wanted.name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(wanted)
                done.append(f"created {wanted.name}")
                log.info("created stream %s", wanted.name, extra={"stream": wanted.name})
            except nats.js.errors.BadRequestError as exc:
                # Another service created it between our lookup and our create; check it next time.
                if exc.err_code != 10058:
                    raise
            continue
        drift = _differs(wanted, info.config)
        if drift:
            # Storage type and replicas of some servers cannot change in place; the server says so.
            merged = dataclasses.replace(info.config, **{k: getattr(wanted, k) for k in drift})
            await js.update_stream(merged)
            done.append(f"updated {wanted.name} ({', '.join(drift)})")
            log.info("updated stream %s: %s", wanted.name, ", ".join(drift), extra={"stream": wanted.name})
    return done


Start = Literal["last_per_subject", "new", "all", "since"]
_POLICIES: Final[dict[str, DeliverPolicy]] = {
    "last_per_subject": DeliverPolicy.LAST_PER_SUBJECT,
    "new": DeliverPolicy.NEW,
    "all": DeliverPolicy.ALL,
}


class Follower:
    """Replay then follow one subject filter, in order.

    ``caught_up`` is set once every message that existed when following began has been delivered,
    so a service can report itself ready only when it is warm.
    """

    def __init__(
        self,
        js: JetStreamContext,
        subject: str,
        *,
        start: Start = "last_per_subject",
        since: datetime | None = None,
    ) -> None:
        if (start == "since") != (since is not None):
            raise ValueError("start='since' needs since=<datetime>, and only it")
        self._js = js
        self.subject = subject
        self._start = start
        self._since = since
        self.caught_up = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[Msg]:
        if self._since is not None:
            # An ordered consumer takes its start from a config; the other policies are plain flags.
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=self._since.astimezone(UTC),
            )
            sub = await self._js.subscribe(self.subject, ordered_consumer=True, config=config, idle_heartbeat=5.0)
        else:
            sub = await self._js.subscribe(
                self.subject, ordered_consumer=True, deliver_policy=_POLICIES[self._start], idle_heartbeat=5.0
            )
        try:
            info = await sub.consumer_info()
            nothing_to_replay = not info.num_pending and not (info.delivered and info.delivered.consumer_seq)
            if nothing_to_replay or self._start == "new":
                self.caught_up.set()
            async for msg in sub.messages:
                yield msg
                # Set only after the consumer has handled the message, so "caught up" means "warm".
                if not self.caught_up.is_set() and msg.metadata.num_pending == 0:
                    self.caught_up.set()
        finally:
            try:
                await sub.unsubscribe()
            except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
                # Gone with the connection; nats-py then leaves its heartbeat and flow-control
                # monitors running (it cancels them only on a successful unsubscribe).
                jsi = getattr(sub, "_jsi", None)
                for name in ("_hbtask", "_fctask"):
                    task = getattr(jsi, name, None)
                    if task is not None:
                        task.cancel()
