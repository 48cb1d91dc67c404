"""Publishing many messages at once (shared.publishing), against a real nats-server: acks awaited
together, yet per subject in order, retried with the same Nats-Msg-Id, healed, and never lost silently."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import nats
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import PubAck, StreamConfig

from shared import messages, natsio, publishing, streams
from shared.settings import Settings
from shared.subjects import Subjects
from tests.fixtures.servers import NatsServer

S = Subjects()
SPEC = streams.StreamSpec()
AT = datetime(2026, 1, 1, tzinfo=UTC)


def _target(name: str, replicas: int, pods: int = 0) -> messages.Target:
    return messages.Target(
        namespace="llm",
        name=name,
        at=AT,
        spec_replicas=replicas,
        pods=tuple(messages.PodRef(name=f"{name}-{i}") for i in range(pods)),
    )


def _snapshot(name: str) -> messages.MetricsSnapshot:
    return messages.MetricsSnapshot(namespace="llm", name=name, at=AT, collected_at=AT)


async def test_a_batch_is_stored_with_each_subject_in_order(nats_client: Client) -> None:
    js = nats_client.jetstream()
    await streams.ensure(js, S, SPEC)
    # Three versions of 100 targets, interleaved: the last of each must be the one the stream keeps.
    batch = [
        publishing.Outgoing(S.targets("llm", f"va-{i}"), _target(f"va-{i}", v))
        for v in (1, 2, 3)
        for i in range(100)
    ]
    outcomes = await publishing.publish_many(nats_client, batch)
    assert all(isinstance(o, PubAck) for o in outcomes), [o for o in outcomes if not isinstance(o, PubAck)][
        :3
    ]
    acks = [o for o in outcomes if isinstance(o, PubAck)]
    for i in range(100):
        seqs = [acks[v * 100 + i].seq for v in range(3)]
        assert seqs == sorted(seqs), f"va-{i} stored out of order: {seqs}"
        last = messages.targets_decoder.decode(
            (await js.get_last_msg("WVA_TARGETS", S.targets("llm", f"va-{i}"))).data or b""
        )
        assert isinstance(last, messages.Target) and last.spec_replicas == 3


async def test_messages_no_stream_takes_are_healed_and_stored_or_returned_with_their_error(
    nats_client: Client,
) -> None:
    js = nats_client.jetstream()
    await streams.ensure(js, S, SPEC)
    await js.delete_stream("WVA_METRICS")  # a NATS store wiped under a running service
    batch: list[publishing.Outgoing] = []
    for i in range(50):
        batch.append(publishing.Outgoing(S.targets("llm", f"va-{i}"), _target(f"va-{i}", 1)))
        batch.append(publishing.Outgoing(S.metrics("llm", f"va-{i}"), _snapshot(f"va-{i}")))

    # Nobody heals: the targets are stored, every snapshot comes back with why (after its retries).
    outcomes = await publishing.publish_many(nats_client, batch, attempts=2)
    assert all(isinstance(o, PubAck) for o in outcomes[0::2])
    assert all(isinstance(o, nats.js.errors.NoStreamResponseError) for o in outcomes[1::2])

    healed: list[list[str]] = []

    async def heal() -> None:
        healed.append(await streams.ensure(js, S, SPEC))

    outcomes = await publishing.publish_many(nats_client, batch, heal=heal)
    assert all(isinstance(o, PubAck) for o in outcomes)
    assert healed[0] == ["created WVA_METRICS"]
    assert (await js.stream_info("WVA_METRICS")).state.messages == 50


async def test_a_message_the_stream_refuses_is_returned_and_the_others_stored(nats_client: Client) -> None:
    js = nats_client.jetstream()
    await js.add_stream(StreamConfig(name="SMALL", subjects=["small.>"], max_msg_size=1024))
    batch = [
        publishing.Outgoing(f"small.{i}", _target(f"va-{i}", 1, pods=20 if i % 3 == 0 else 0))
        for i in range(30)
    ]
    outcomes = await publishing.publish_many(nats_client, batch)
    for i, outcome in enumerate(outcomes):
        if i % 3 == 0:  # refused by the server: an error that another attempt would not change
            assert isinstance(outcome, nats.js.errors.APIError) and not isinstance(outcome, PubAck), outcome
        else:
            assert isinstance(outcome, PubAck), (i, outcome)
    assert (await js.stream_info("SMALL")).state.messages == 20


async def test_a_server_restart_mid_batch_loses_nothing_and_stores_nothing_twice(
    nats_server: NatsServer,
) -> None:
    nc = await natsio.connect(Settings(nats_url=nats_server.url), name="test")
    watcher = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        js = nc.jetstream()
        await streams.ensure(js, S, SPEC)
        seen = asyncio.Event()
        count = [0]

        async def on_message(_: object) -> None:
            count[0] += 1
            if count[0] == 200:
                seen.set()

        await watcher.subscribe("wva.invalidate.>", cb=on_message)
        await watcher.flush()
        # An event log, not a last-value stream: a message stored twice would show as one more.
        n = 3000
        batch = [
            publishing.Outgoing(
                S.invalidate("llm", f"va-{i}"),
                messages.Invalidation(namespace="llm", name=f"va-{i}", at=AT, reason="relist"),
            )
            for i in range(n)
        ]
        task = asyncio.create_task(publishing.publish_many(nc, batch, attempts=20))
        await asyncio.wait_for(seen.wait(), 10)
        assert not task.done()  # the restart falls in the middle of the batch
        await asyncio.to_thread(nats_server.restart)
        outcomes = await asyncio.wait_for(task, 45)
        failed = [o for o in outcomes if not isinstance(o, PubAck)]
        assert not failed, failed[:3]
        assert (await js.stream_info("WVA_EVENTS")).state.messages == n
    finally:
        await watcher.close()
        await nc.close()
