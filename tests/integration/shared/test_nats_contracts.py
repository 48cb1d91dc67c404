"""The NATS plumbing every service relies on, against a real nats-server."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client

from shared import lifecycle, messages, natsio, streams
from shared.lifecycle import Runtime
from shared.settings import Settings, load
from shared.subjects import SubjectKind, Subjects
from tests.fixtures.servers import NatsServer, free_port, nats_server_binary

S = Subjects()
SPEC = streams.StreamSpec()
AT = datetime(2026, 1, 1, tzinfo=UTC)


def target(name: str, replicas: int) -> messages.Target:
    return messages.Target(namespace="llm", name=name, at=AT, spec_replicas=replicas)


async def test_ensure_creates_then_is_a_no_op(nats_client: Client) -> None:
    js = nats_client.jetstream()
    first = await streams.ensure(js, S, SPEC)
    assert sorted(first) == ["created WVA_EVENTS", "created WVA_METRICS", "created WVA_TARGETS"]
    assert await streams.ensure(js, S, SPEC) == []
    info = await js.stream_info("WVA_TARGETS")
    assert info.config.max_msgs_per_subject == 1
    assert info.config.subjects == ["wva.targets.>"]


async def test_ensure_repairs_drift(nats_client: Client) -> None:
    js = nats_client.jetstream()
    await streams.ensure(js, S, SPEC)
    changed = await streams.ensure(js, S, streams.StreamSpec(events_max_age=3600))
    assert changed == ["updated WVA_EVENTS (max_age)"]
    assert (await js.stream_info("WVA_EVENTS")).config.max_age == 3600


async def test_follower_replays_last_value_per_subject_then_live(nats_client: Client) -> None:
    js = nats_client.jetstream()
    await streams.ensure(js, S, SPEC)
    for replicas in (1, 2, 3):
        await natsio.publish(js, S.targets("llm", "a"), target("a", replicas))
    await natsio.publish(js, S.targets("llm", "b.x"), target("b.x", 7))

    follower = streams.Follower(js, S.wildcard(SubjectKind.TARGETS))
    received: list[messages.Target] = []

    async def consume() -> None:
        async for msg in follower:
            decoded = messages.targets_decoder.decode(msg.data)
            assert isinstance(decoded, messages.Target)
            received.append(decoded)
            if len(received) == 3:
                return

    task = asyncio.create_task(consume())
    await asyncio.wait_for(follower.caught_up.wait(), 5)
    assert [(t.name, t.spec_replicas) for t in received] == [("a", 3), ("b.x", 7)]  # only the last of "a"
    await natsio.publish(js, S.targets("llm", "a"), target("a", 4))
    await asyncio.wait_for(task, 5)
    assert (received[-1].name, received[-1].spec_replicas) == ("a", 4)


async def test_follower_on_empty_stream_is_caught_up_at_once(nats_client: Client) -> None:
    js = nats_client.jetstream()
    await streams.ensure(js, S, SPEC)
    follower = streams.Follower(js, S.wildcard(SubjectKind.METRICS))

    async def consume() -> None:
        async for _ in follower:
            return

    task = asyncio.create_task(consume())
    await asyncio.wait_for(follower.caught_up.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_duplicate_msg_id_is_stored_once(nats_client: Client) -> None:
    js = nats_client.jetstream()
    await streams.ensure(js, S, SPEC)
    subject = S.invalidate("llm", "a")
    inval = messages.Invalidation(namespace="llm", name="a", at=AT, reason="relist")
    first = await natsio.publish(js, subject, inval, msg_id="same")
    second = await natsio.publish(js, subject, inval, msg_id="same")
    assert second.duplicate and not first.duplicate
    assert (await js.stream_info("WVA_EVENTS")).state.messages == 1


async def test_wrong_password_fails_at_once_with_a_clear_error(tmp_path: Path) -> None:
    binary = nats_server_binary()
    assert binary is not None, "nats-server missing: make setup"
    server = NatsServer(binary, tmp_path, config='authorization { user: wva, password: right }\n')
    server.start()
    try:
        settings = Settings(nats_url=server.url, nats_user="wva", nats_password="wrong", nats_connect_timeout=20)
        started = time.monotonic()
        with pytest.raises(natsio.NatsStartupError, match="refused the credentials"):
            await natsio.connect(settings, name="test")
        assert time.monotonic() - started < 10  # not retried for the whole bound
        good = await natsio.connect(
            Settings(nats_url=server.url, nats_user="wva", nats_password="right"), name="test"
        )
        await good.close()
    finally:
        server.stop()


async def test_service_without_nats_retries_then_exits_non_zero(caplog: pytest.LogCaptureFixture) -> None:
    settings = load(
        Settings,
        environ={
            "WVA_NATS_URL": f"nats://127.0.0.1:{free_port()}",
            "WVA_NATS_CONNECT_TIMEOUT": "1.5s",
            "WVA_HTTP_ADDR": "127.0.0.1:0",
        },
    )

    async def main(_: Runtime) -> None:
        raise AssertionError("main must not run without NATS")

    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    status = await asyncio.wait_for(lifecycle.serve("test", settings, main, stop=asyncio.Event()), 15)
    assert status == 1
    assert 1.0 < time.monotonic() - started < 10
    assert any("not reachable yet" in r.getMessage() for r in caplog.records)  # it retried
    assert any("WVA_NATS_CONNECT_TIMEOUT" in r.getMessage() for r in caplog.records)


async def test_serve_readiness_and_crash_exit_status(nats_server: NatsServer) -> None:
    import aiohttp

    settings = Settings(nats_url=nats_server.url, http_addr="127.0.0.1:0")
    ready = asyncio.Event()
    stop = asyncio.Event()
    seen: dict[str, int] = {}

    async def main(runtime: Runtime) -> None:
        seen["port"] = runtime.http_port
        await runtime.stop.wait()

    task = asyncio.create_task(lifecycle.serve("test", settings, main, stop=stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{seen['port']}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["checks"] == {"nats": True, "streams": True}
        async with http.get(f"http://127.0.0.1:{seen['port']}/metrics") as resp:
            assert "wva_nats_connected 1.0" in await resp.text()
    stop.set()
    assert await asyncio.wait_for(task, 10) == 0

    async def crashing(_: Runtime) -> None:
        raise RuntimeError("loop died")

    assert await asyncio.wait_for(lifecycle.serve("test", settings, crashing, stop=asyncio.Event()), 10) == 1


async def test_publish_survives_a_server_restart(nats_server: NatsServer) -> None:
    nc = await natsio.connect(Settings(nats_url=nats_server.url), name="test")
    try:
        js = nc.jetstream()
        await streams.ensure(js, S, SPEC)
        nats_server.restart()
        await natsio.publish(js, S.targets("llm", "a"), target("a", 5), attempts=20)
        msg = await js.get_last_msg("WVA_TARGETS", S.targets("llm", "a"))
        decoded = messages.targets_decoder.decode(msg.data or b"")
        assert isinstance(decoded, messages.Target) and decoded.spec_replicas == 5
    finally:
        await nc.close()




async def test_own_drain_is_not_logged_as_an_outage_but_a_server_loss_is(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wva.nats")
    nc = await natsio.connect(Settings(nats_url=nats_server.url), name="test")
    await nc.drain()
    assert not [r for r in caplog.records if "disconnected" in r.getMessage()]
    nc = await natsio.connect(Settings(nats_url=nats_server.url), name="test")
    try:
        nats_server.stop()
        for _ in range(100):
            if any("disconnected" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        assert any("NATS disconnected; reconnecting" in r.getMessage() for r in caplog.records)
    finally:
        await nc.close()
