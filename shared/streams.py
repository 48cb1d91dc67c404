"""JetStream streams (docs/design.md §3) and the helpers to create them and to follow them.

- ``<P>_TARGETS`` and ``<P>_METRICS`` keep the last value per subject (file storage), so a consumer
  that starts with ``DeliverPolicy.LAST_PER_SUBJECT`` is warm at once. They allow per-message TTLs:
  a tombstone (``TargetDeleted``, ``MetricsDeleted``) expires after ``WVA_TOMBSTONE_TTL`` instead of
  being replayed at every start forever.
- ``<P>_EVENTS`` is a bounded log of invalidations, decisions and ownership changes (which partitions
  each replica holds, docs/design.md §11).

:func:`ensure` creates or updates them and is a no-op when they already match; any service may call
it at any time (every service does at start-up, then periodically and whenever a publish finds no
stream, so streams lost with a wiped store come back). :class:`Follower` replays (last value per
subject, or only new messages) and then follows live messages in order through an ordered consumer,
and resubscribes — at its place, or from the start of a re-created stream — when the consumer or the
stream goes away.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
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
    StreamInfo,
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
    # Per-message TTL (nats-server 2.11+) on the last-value streams, so tombstones expire (the
    # ``Nats-TTL`` header that ``shared.natsio.publish`` sets on them).
    message_ttl: bool = True


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
            allow_msg_ttl=True if spec.message_ttl else None,
        )

    return [
        last_value(TARGETS, SubjectKind.TARGETS),
        last_value(METRICS, SubjectKind.METRICS),
        StreamConfig(
            name=subjects.stream_name(EVENTS),
            subjects=[
                subjects.wildcard(SubjectKind.INVALIDATE),
                subjects.wildcard(SubjectKind.DECISIONS),
                subjects.wildcard(SubjectKind.OWNERS),
            ],
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
    "allow_msg_ttl",  # only turned on: a server cannot turn it off again
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


Start = Literal["last_per_subject", "new", "all", "since", "after"]
_POLICIES: Final[dict[str, DeliverPolicy]] = {
    "last_per_subject": DeliverPolicy.LAST_PER_SUBJECT,
    "new": DeliverPolicy.NEW,
    "all": DeliverPolicy.ALL,
}
CHECK_INTERVAL: Final = 2.0
"""Seconds without a message after which a follower checks that its stream and consumer still exist."""

# NATS is away or busy: whether the consumer still exists cannot be told now; ask again later.
_UNKNOWN: Final = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionClosedError,
    nats.js.errors.ServiceUnavailableError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a follower is: a stream (its name and creation time tell a re-created one apart) and the
    sequence of the last message it delivered (or, for ``start="new"``, the last one it skipped)."""

    stream: str
    created: datetime | None
    seq: int | None


class Follower:
    """Replay then follow one subject filter (or several of one stream, delivered by one consumer in
    stream order), in order, through NATS restarts and lost streams.

    ``start``: the last value per subject, only new messages, everything, messages since a time, or
    messages after a stream sequence (``after``: nothing between a position noted earlier and the
    subscription is missed).

    ``caught_up`` is set once every message that existed when following began has been delivered,
    so a service can report itself ready only when it is warm. It is cleared while the follower has
    lost its consumer (a NATS restart with an empty store, a deleted stream) and set again once it has
    caught up after resubscribing, so readiness checks built on it turn false while a service cannot
    read its stream.

    Healing: when no message came for ``check_interval`` seconds the follower asks for its stream and
    consumer. If either is gone it resubscribes, waiting for the stream to come back: from the next
    sequence on the same stream (nothing is lost or repeated), or from the start policy on a stream
    that was re-created (everything on it is new to this follower).
    """

    def __init__(
        self,
        js: JetStreamContext,
        subject: str | Sequence[str],
        *,
        start: Start = "last_per_subject",
        since: datetime | None = None,
        after: int | None = None,
        check_interval: float = CHECK_INTERVAL,
    ) -> None:
        if (start == "since") != (since is not None):
            raise ValueError("start='since' needs since=<datetime>, and only it")
        if (start == "after") != (after is not None):
            raise ValueError("start='after' needs after=<stream sequence>, and only it")
        self._js = js
        # Several filters of one stream: one consumer delivers them in stream order.
        self.subjects = (subject,) if isinstance(subject, str) else tuple(subject)
        self.subject = self.subjects[0]
        self._start = start
        self._since = since
        self._after = after
        self._check_interval = check_interval
        self.caught_up = asyncio.Event()
        self.resubscriptions = 0  # times the consumer was lost and made again

    async def __aiter__(self) -> AsyncIterator[Msg]:
        place: _Place | None = None
        while True:
            sub, place = await self._subscribe(place)
            if self.resubscriptions:
                log.info("following %s again", self.subject, extra={"subject": self.subject, "stream": place.stream})
            try:
                info = await sub.consumer_info()
                nothing_to_replay = not info.num_pending and not (info.delivered and info.delivered.consumer_seq)
                if nothing_to_replay or (self._start == "new" and self.resubscriptions == 0):
                    self.caught_up.set()
                while True:
                    try:
                        msg = await sub.next_msg(timeout=self._check_interval)
                    except nats.errors.TimeoutError:
                        if await self._lost(sub, place):
                            break
                        continue
                    place = dataclasses.replace(place, seq=msg.metadata.sequence.stream)
                    yield msg
                    # Set only after the consumer has handled the message, so "caught up" means "warm".
                    if not self.caught_up.is_set() and msg.metadata.num_pending == 0:
                        self.caught_up.set()
            except nats.js.errors.NotFoundError:
                pass  # the consumer went away between subscribing and asking about it
            finally:
                await _unsubscribe(sub)
            self.caught_up.clear()
            self.resubscriptions += 1
            log.warning(
                "lost the consumer of %s (stream gone or NATS restarted); resubscribing", self.subject,
                extra={"subject": self.subject, "stream": place.stream},
            )

    async def _subscribe(self, place: _Place | None) -> tuple[JetStreamContext.PushSubscription, _Place]:
        """Subscribe where ``place`` says, waiting (with backoff) for the stream to exist."""
        delay = 0.05
        while True:
            try:
                name = await self._js.find_stream_name_by_subject(self.subject)
                info = await self._js.stream_info(name)
                place, config = self._resume(place, name=name, info=info)
                if len(self.subjects) > 1:
                    config.filter_subjects = list(self.subjects)
                sub = await self._js.subscribe(
                    self.subject, stream=name, ordered_consumer=True, config=config, idle_heartbeat=5.0
                )
                return sub, place
            except (nats.js.errors.NotFoundError, *_UNKNOWN):
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._check_interval)

    def _resume(self, place: _Place | None, *, name: str, info: StreamInfo) -> tuple[_Place, ConsumerConfig]:
        """Where to (re)start on the stream ``info`` describes, and the consumer that starts there."""
        if place is None:  # following begins
            if self._start in ("new", "after"):  # after what the stream holds now, or after a sequence
                seq = info.state.last_seq if self._after is None else self._after
                place = _Place(stream=name, created=info.created, seq=seq)
                return place, _after(place.seq)
            return _Place(stream=name, created=info.created, seq=None), self._initial()
        if place.stream == name and place.created == info.created:  # the same stream: carry on
            return place, (self._initial() if place.seq is None else _after(place.seq))
        # A re-created stream (an empty store, a deleted stream): everything on it is new to us.
        policy = DeliverPolicy.LAST_PER_SUBJECT if self._start == "last_per_subject" else DeliverPolicy.ALL
        return _Place(stream=name, created=info.created, seq=None), ConsumerConfig(deliver_policy=policy)

    def _initial(self) -> ConsumerConfig:
        if self._since is not None:
            return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=self._since.astimezone(UTC))
        return ConsumerConfig(deliver_policy=_POLICIES[self._start])

    async def _lost(self, sub: JetStreamContext.PushSubscription, place: _Place) -> bool:
        """Is the consumer (or its stream) gone? False when NATS cannot say right now."""
        try:
            info = await self._js.stream_info(place.stream)
            if info.created != place.created:
                return True  # re-created under the same name: the old position means nothing there
            await sub.consumer_info()
        except nats.js.errors.NotFoundError:
            return True
        except _UNKNOWN:
            return False
        return False


@dataclass(frozen=True, slots=True)
class Stored:
    """A message as the stream keeps it."""

    subject: str
    data: bytes
    seq: int


_LAST_VALUES_CONCURRENCY: Final = 64


async def last_values(js: JetStreamContext, subject: str, *, upto: int | None = None) -> list[Stored]:
    """The last message of every subject matching ``subject`` whose sequence is at most ``upto``, in
    stream order. The stream lists its subjects and each one's last message is read by a get — no
    consumer, whose pending count a clustered stream may not know yet when it is made. Empty when the
    stream is missing or NATS does not answer (logged)."""
    try:
        name = await js.find_stream_name_by_subject(subject)
        info = await js.stream_info(name, subjects_filter=subject)
    except (nats.js.errors.NotFoundError, *_UNKNOWN) as exc:
        log.warning("could not read the last values of %s: %s", subject, type(exc).__name__)
        return []
    limit = asyncio.Semaphore(_LAST_VALUES_CONCURRENCY)

    async def one(each: str) -> Stored | None:
        async with limit:
            try:
                raw = await js.get_last_msg(name, each)
            except (nats.js.errors.NotFoundError, *_UNKNOWN):
                return None  # gone since the listing (or NATS busy): a follower brings what comes next
        if raw.seq is None or raw.subject is None or (upto is not None and raw.seq > upto):
            return None
        return Stored(raw.subject, raw.data or b"", raw.seq)

    found = await asyncio.gather(*(one(each) for each in info.state.subjects or {}))
    return sorted((m for m in found if m is not None), key=lambda m: m.seq)


def _after(seq: int | None) -> ConsumerConfig:
    return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=(seq or 0) + 1)


async def _unsubscribe(sub: JetStreamContext.PushSubscription) -> None:
    try:
        await sub.unsubscribe()
    except nats.errors.Error:
        # Gone with the connection (or the server forgot it); nats-py then leaves its heartbeat and
        # flow-control monitors running (it cancels them only on a successful unsubscribe).
        jsi = getattr(sub, "_jsi", None)
        for name in ("_hbtask", "_fctask"):
            task = getattr(jsi, name, None)
            if task is not None:
                task.cancel()
