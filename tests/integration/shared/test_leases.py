"""Leases in a real nats-server's KV bucket (shared/leases.py): share, renewal, expiry, loss, fencing,
rebalancing without ping-pong, a lost bucket, hostile values."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client

from shared import partitions
from shared.leases import Leases
from shared.natsleases import NatsLeaseStore, read_bucket
from shared.observability import MESSAGES_REJECTED
from tests.fixtures.servers import NatsServer

BUCKET = "TEST_LEASES"
TTL = 1.5

MakeLeases = Callable[..., Awaitable[Leases]]


@pytest.fixture
async def make_leases(nats_server: NatsServer) -> AsyncIterator[MakeLeases]:
    clients: list[Client] = []

    async def make(identity: str, *, service: str = "scaler", total: int = 16, ttl: float = TTL, clock: Any = time.monotonic) -> Leases:
        nc = await nats.connect(nats_server.url)
        clients.append(nc)
        return Leases(
            NatsLeaseStore(nc, bucket=BUCKET, ttl=ttl), service=service, identity=identity,
            partitions=partitions.numbered(total), ttl=ttl, clock=clock,
        )

    try:
        yield make
    finally:
        for nc in clients:
            await nc.close()


async def holders(nats_client: Client, service: str = "scaler") -> dict[str, str | None]:
    js = nats_client.jetstream()
    kv = await js.key_value(BUCKET)
    return {k.split(".", 1)[1]: e.holder for k, e in (await read_bucket(js, kv, BUCKET, keys=f"{service}.*")).items()}


async def rounds(*replicas: Leases, n: int = 1) -> None:
    for _ in range(n):
        for replica in replicas:
            await replica.round()


async def settled(a: Leases, b: Leases) -> None:
    """Two replicas that started together, once they share the partitions (b holds its 8)."""
    await rounds(a, b)
    await asyncio.sleep(a.period)  # a gives back only what it has held a whole period
    await rounds(a, b, n=2)
    assert len(b.owned) == 8


async def test_one_replica_holds_every_partition_and_renews(make_leases: MakeLeases, nats_client: Client) -> None:
    a = await make_leases("a-1")
    changes = a.subscribe()
    assert changes.get_nowait() == frozenset()
    await a.round()
    assert a.owned == frozenset(partitions.numbered(16)) and a.healthy
    assert all(a.valid(p) for p in a.owned)
    assert changes.get_nowait() == a.owned
    assert await holders(nats_client) == dict.fromkeys(partitions.numbered(16), "a-1")
    await asyncio.sleep(TTL * 0.7)
    await a.round()  # renewed: the keys outlive their first TTL
    await asyncio.sleep(TTL * 0.7)
    assert await holders(nats_client) == dict.fromkeys(partitions.numbered(16), "a-1")
    assert a.report()["held"] == list(partitions.numbered(16))
    # a round makes no consumer (a KV watch per round left one behind for five minutes each)
    assert (await nats_client.jetstream().stream_info(f"KV_{BUCKET}")).state.consumer_count == 0


async def test_two_replicas_share_and_never_hold_one_partition_both(make_leases: MakeLeases, nats_client: Client) -> None:
    a, b = await make_leases("a-1"), await make_leases("b-1")
    await rounds(a, b)
    assert len(a.owned) == 16 and not b.owned  # a came first; b counts two members now
    await asyncio.sleep(a.period)
    await rounds(a, b, n=3)
    assert (len(a.owned), len(b.owned)) == (8, 8)
    assert not a.owned & b.owned
    seen = await holders(nats_client)
    assert {p for p, h in seen.items() if h == "a-1"} == a.owned and {p for p, h in seen.items() if h == "b-1"} == b.owned


async def test_a_replica_that_stops_renewing_is_fenced_before_its_leases_expire(make_leases: MakeLeases) -> None:
    a, b = await make_leases("a-1"), await make_leases("b-1")
    await rounds(a)
    stopped = time.monotonic()
    # a stops renewing (a stopped process): fenced after TTL - period, its keys gone after TTL
    while a.valid("0"):
        await asyncio.sleep(0.02)
    fenced_after = time.monotonic() - stopped
    assert fenced_after <= TTL - a.period + 0.1
    await rounds(b)
    assert not b.owned  # not expired yet: nobody can take them while a may still act
    deadline = time.monotonic() + 3 * TTL
    while len(b.owned) < 16 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        await b.round()
    assert len(b.owned) == 16, "b never took over"
    took_over_after = time.monotonic() - stopped
    assert took_over_after >= TTL - 0.05  # never before a's keys expired
    await a.round()  # a resumes: every renewal is refused, it holds nothing
    assert a.owned == frozenset() and not a.valid("0")


async def test_a_clean_leave_hands_over_at_the_next_round(make_leases: MakeLeases, nats_client: Client) -> None:
    a, b = await make_leases("a-1"), await make_leases("b-1")
    await settled(a, b)
    await a.release()
    await rounds(b)
    # a's member key is gone too, so b's share is all of them at once
    assert len(b.owned) == 16
    assert set((await holders(nats_client)).values()) == {"b-1"}


async def test_a_third_replica_joins_and_one_leaves_without_ping_pong(make_leases: MakeLeases, nats_client: Client) -> None:
    replicas = [await make_leases(f"{n}-1") for n in "abc"]
    a, b, c = replicas
    await rounds(a, b)
    await asyncio.sleep(a.period)
    await rounds(a, b, n=2)
    holder = await holders(nats_client)
    changes: list[tuple[str, str | None]] = []  # (partition, new holder) whenever a holder changes
    watcher = await (await nats_client.jetstream().key_value(BUCKET)).watch("scaler.*")

    async def record() -> None:
        async for entry in watcher:
            if entry is None:
                continue
            partition = entry.key.split(".", 1)[1]
            new = entry.value.decode() if entry.operation is None else None
            if holder.get(partition) != new:
                holder[partition] = new
                changes.append((partition, new))

    recorder = asyncio.create_task(record())
    try:
        await asyncio.sleep(0.1)
        for _ in range(8):  # c joins; a renewal period between rounds, as the loop does
            await rounds(a, b, c)
            await asyncio.sleep(a.period)
        assert sorted(len(r.owned) for r in replicas) == [4, 6, 6]
        assert {p for r in replicas for p in r.owned} == set(partitions.numbered(16))
        given_back = [p for p, h in changes if h is None]
        taken = [p for p, h in changes if h == "c-1"]
        # four released by a and b, the same four taken by c, nothing else moved
        assert sorted(given_back) == sorted(taken) and len(set(taken)) == 4 and len(changes) == 8, changes
        changes.clear()
        await c.release()  # c leaves cleanly: a and b take its partitions, each once
        for _ in range(3):
            await rounds(a, b)
            await asyncio.sleep(a.period)
        assert sorted(len(r.owned) for r in (a, b)) == [8, 8]
        assert sorted(p for p, h in changes if h is None) == sorted(taken)
        assert sorted(p for p, h in changes if h in ("a-1", "b-1")) == sorted(taken), changes
        assert len(changes) == 8, changes
    finally:
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)
        await watcher.stop()  # type: ignore[no-untyped-call]


async def test_the_bucket_comes_back_after_a_wiped_store(make_leases: MakeLeases, nats_server: NatsServer) -> None:
    a = await make_leases("a-1")
    await a.round()
    assert len(a.owned) == 16
    nats_server.restart(empty_store=True)
    nc = await nats.connect(nats_server.url)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await a.round()
            try:
                seen = await holders(nc)
            except nats.js.errors.BucketNotFoundError:
                continue
            if seen == dict.fromkeys(partitions.numbered(16), "a-1") and a.owned == frozenset(seen):
                return
    finally:
        await nc.close()
    raise AssertionError(f"leases not back after a wiped store: {a.report()}")


async def test_a_hostile_value_is_counted_and_the_partition_stays_untaken(make_leases: MakeLeases, nats_client: Client) -> None:
    a = await make_leases("a-1")
    await a.round()
    await a.release()
    kv = await nats_client.jetstream().key_value(BUCKET)
    await kv.put("scaler.3", b"\xff" * 10_000)
    await kv.put("members.scaler.x", b"not-this-key")
    rejected = MESSAGES_REJECTED.labels(subject_kind="leases", reason="invalid")._value.get()
    b = await make_leases("b-1")
    await b.round()
    assert b.owned == frozenset(partitions.numbered(16)) - {"3"}
    assert b.members == 1  # a member key whose value is not its own identity does not count
    assert MESSAGES_REJECTED.labels(subject_kind="leases", reason="invalid")._value.get() > rejected


async def test_a_member_write_whose_answer_was_lost_does_not_stop_the_rounds(make_leases: MakeLeases, nats_client: Client) -> None:
    a = await make_leases("a-1")
    await a.round()
    # the server took a renewal whose answer never came back: the revision a holds is behind
    kv = await nats_client.jetstream().key_value(BUCKET)
    await kv.put("members.scaler.a-1", b"a-1")
    await kv.put("scaler.3", b"a-1")
    for _ in range(4):  # more than a TTL of rounds: each must reach the bucket and renew
        await a.round()
        await asyncio.sleep(a.period)
    assert a.healthy and a.members == 1
    assert a.owned == frozenset(partitions.numbered(16))  # partition 3 taken back: the key said a-1
    assert all(a.valid(p) for p in a.owned)
