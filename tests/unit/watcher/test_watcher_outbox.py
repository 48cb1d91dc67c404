"""The outbox keeps the latest state per VA while publishing fails and never sends stale over newer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import nats.errors

from services.watcher.publishing import Outbox
from shared.messages import Invalidation, Target, TargetDeleted, VAKey

AT = datetime(2025, 1, 1, tzinfo=UTC)
A, B = VAKey(("llm", "a")), VAKey(("llm", "b"))


def t(name: str, replicas: int) -> Target:
    return Target(namespace="llm", name=name, at=AT, spec_replicas=replicas)


class FlakyNats:
    """Fails every publish while ``down`` is set; records what got through, with its msg id."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[tuple[str, msgspec.Struct, str]] = []
        self.attempts = 0

    async def __call__(self, subject: str, message: msgspec.Struct, msg_id: str) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.down:
            raise nats.errors.TimeoutError
        self.sent.append((subject, message, msg_id))


async def test_while_nats_is_down_only_the_latest_state_per_va_is_kept_and_sent_later() -> None:
    nats_ = FlakyNats()
    nats_.down = True
    outbox = Outbox(nats_, backoff_min=0.01, backoff_max=0.02)
    task = asyncio.create_task(outbox.run())
    try:
        for replicas in range(1, 6):
            outbox.put(A, "s.a", t("a", replicas))
            await asyncio.sleep(0.01)
        outbox.put(A, "i.a", Invalidation(namespace="llm", name="a", at=AT, reason="replicas_changed"))
        outbox.put(B, "s.b", t("b", 1))
        outbox.put(B, "s.b", TargetDeleted(namespace="llm", name="b", at=AT))
        outbox.put(A, "i.a", Invalidation(namespace="llm", name="a", at=AT, reason="replicas_changed", deployment_generation=9))
        assert outbox.pending == 3  # a: its newest target and one invalidation; b: the tombstone
        await asyncio.sleep(0.1)
        assert nats_.attempts > 1 and nats_.sent == []
        nats_.down = False
        await asyncio.wait_for(outbox.wait_idle(), 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    by_subject = [(s, m) for s, m, _ in nats_.sent]
    expected = [
        ("s.a", t("a", 5)),
        ("i.a", Invalidation(namespace="llm", name="a", at=AT, reason="replicas_changed", deployment_generation=9)),
        ("s.b", TargetDeleted(namespace="llm", name="b", at=AT)),
    ]
    assert sorted(by_subject, key=lambda x: x[0]) == sorted(expected, key=lambda x: x[0])
    # Per VA, the order in which things were put holds.
    a_only = [s for s, _ in by_subject if s.endswith(".a")]
    assert a_only == ["s.a", "i.a"]


async def test_a_newer_message_put_during_a_publish_goes_out_after_it() -> None:
    gate = asyncio.Event()
    sent: list[int] = []

    async def slow(subject: str, message: msgspec.Struct, msg_id: str) -> None:
        assert isinstance(message, Target)
        if message.spec_replicas == 1:
            await gate.wait()
        sent.append(message.spec_replicas)

    outbox = Outbox(slow)
    task = asyncio.create_task(outbox.run())
    try:
        outbox.put(A, "s.a", t("a", 1))
        await asyncio.sleep(0.01)  # 1 is in flight
        outbox.put(A, "s.a", t("a", 2))
        gate.set()
        await asyncio.wait_for(outbox.wait_idle(), 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sent == [1, 2]


async def test_retries_reuse_the_message_id() -> None:
    nats_ = FlakyNats()
    ids: list[str] = []

    async def once_failing(subject: str, message: msgspec.Struct, msg_id: str) -> None:
        ids.append(msg_id)
        if len(ids) == 1:
            raise nats.errors.TimeoutError
        await nats_(subject, message, msg_id)

    outbox = Outbox(once_failing, backoff_min=0.01, backoff_max=0.01)
    task = asyncio.create_task(outbox.run())
    try:
        outbox.put(A, "s.a", t("a", 1))
        await asyncio.wait_for(outbox.wait_idle(), 2)
        outbox.put(A, "s.a", t("a", 2))
        await asyncio.wait_for(outbox.wait_idle(), 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert ids[0] == ids[1] != ids[2]
