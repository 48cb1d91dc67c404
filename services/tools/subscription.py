"""Turn a user's subject filter into subscriptions: live (core NATS) or last-value-first (JetStream)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from shared import streams
from shared.subjects import SubjectKind, Subjects

# Kinds kept in streams; wva.fetch is request/reply only and has no history.
STORED_KINDS = (
    SubjectKind.TARGETS, SubjectKind.METRICS, SubjectKind.INVALIDATE, SubjectKind.DECISIONS, SubjectKind.OWNERS
)


def stored_filters(subjects: Subjects, subject: str) -> list[str]:
    """The per-stream filters covering ``subject`` (an ordered consumer reads one stream).

    ``wva.>`` -> one filter per stored kind; ``wva.*.llm.>`` -> ``wva.targets.llm.>`` …;
    ``wva.metrics.llm.x`` -> itself.
    """
    head = subjects.prefix + "."
    if not subject.startswith(head):
        raise ValueError(f"subject {subject!r} is not under the prefix {subjects.prefix!r}")
    rest = subject[len(head) :].split(".")
    kind_token, tail = rest[0], rest[1:]
    if kind_token == ">":
        return [subjects.wildcard(k) for k in STORED_KINDS]
    if kind_token == "*":
        return [".".join([subjects.prefix, k.value, *tail]) for k in STORED_KINDS]
    if kind_token in {k.value for k in STORED_KINDS}:
        return [subject]
    return []


async def messages(nc: Client, subjects: Subjects, subject: str, *, last: bool) -> AsyncGenerator[Msg, None]:
    """Yield messages on ``subject``; with ``last``, each stored subject's last value comes first."""
    if not last:
        sub = await nc.subscribe(subject)
        try:
            async for msg in sub.messages:
                yield msg
        finally:
            await sub.unsubscribe()
        return
    js = nc.jetstream()
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def pump(filter_subject: str) -> None:
        async for msg in streams.Follower(js, filter_subject):
            await queue.put(msg)

    tasks = [asyncio.create_task(pump(f)) for f in stored_filters(subjects, subject)]
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait([getter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                for task in done:
                    task.result()  # a follower failed: surface it
                continue
            yield getter.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def warm(
    followers: list[streams.Follower], handle: Callable[[Msg], None], *, timeout: float = 30.0
) -> AsyncIterator[None]:
    """Feed every follower's messages to ``handle``; enter once all have replayed what was stored,
    and keep following live until the block ends."""

    async def pump(follower: streams.Follower) -> None:
        async for msg in follower:
            handle(msg)

    tasks = [asyncio.create_task(pump(f)) for f in followers]
    try:
        await asyncio.wait_for(asyncio.gather(*(f.caught_up.wait() for f in followers)), timeout=timeout)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
