"""Issue #12 items 11 and 12 (streams): lost streams come back, followers resume, readiness says so,
and tombstones expire instead of being replayed at every start forever.

`wva fetcher` runs as a process (scrape backend, one good pod) against a real nats-server that the
tests delete streams from, kill -9 and restart (with its store, or with an empty one), or restart
without JetStream at all."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable

import nats.js.errors
import pytest
from aiohttp import web
from nats.aio.client import Client

from services.sandbox.kubeapi import KubeApiEmulator
from shared import kube, messages, streams
from shared.subjects import Subjects
from tests.fixtures.http import HostileHttp
from tests.fixtures.servers import NatsServer
from tests.fixtures.services import ServiceProcess, StartService
from tests.fixtures.watcher import Feed as WatcherFeed
from tests.fixtures.watcher import RunningWatcher
from tests.hostile.conftest import NS, Feed, eventually, fetcher_env, last_message

S = Subjects()
GOOD = "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc 0.5\n"


async def _pod(hostile_http: HostileHttp) -> str:
    async def pod(_: web.Request) -> web.Response:
        return web.Response(text=GOOD)

    return await hostile_http(pod)


def _target(name: str, address: str) -> messages.Target:
    return messages.Target(
        namespace=NS, name=name, at=messages.utcnow(), model_id="m",
        pods=(messages.PodRef(name=f"{name}-0", ready=True, address=address),),
    )


async def _tracked(nc: Client, name: str) -> bool:
    """Does the fetcher know this VA (it came through its targets follower)?"""
    try:
        reply = await nc.request(S.fetch(NS, name), b"", timeout=2)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return False
    snapshot = messages.metrics_decoder.decode(reply.data)
    return isinstance(snapshot, messages.MetricsSnapshot) and "not tracked" not in snapshot.reason


async def _publish_target(nc: Client, target: messages.Target | messages.TargetDeleted) -> None:
    """As the watcher would: retried until a stream takes it (the test's own client has no healing)."""
    js = nc.jetstream()

    async def stored() -> bool:
        try:
            await js.publish(S.targets(target.namespace, target.name), messages.encode(target), timeout=1)
        except (nats.errors.Error, TimeoutError):
            return False
        return True

    await eventually(stored, timeout=20, what=f"a stream takes {target.name}")


async def _recovered(nc: Client, fetcher: ServiceProcess, address: str, name: str) -> None:
    """Streams exist, the fetcher reads the targets stream and writes the metrics stream again."""
    js = nc.jetstream()
    await _publish_target(nc, _target(name, address))
    await eventually(lambda: _tracked(nc, name), timeout=20, what=f"{name} tracked\n{fetcher.tail()}")

    async def metrics_stored() -> bool:
        try:
            await js.get_last_msg(S.stream_name(streams.METRICS), S.metrics(NS, name))
        except (nats.errors.Error, TimeoutError):
            return False
        return True

    await eventually(metrics_stored, timeout=20, what=f"a snapshot of {name} stored\n{fetcher.tail()}")
    await fetcher.wait_ready(20)


async def _following(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService
) -> tuple[str, ServiceProcess]:
    """A pod, its VA ("before") on the targets stream, and a `wva fetcher` that tracks it."""
    address = await _pod(hostile_http)
    js = nats_client.jetstream()
    await streams.ensure(js, S, streams.StreamSpec())
    await js.publish(S.targets(NS, "before"), messages.encode(_target("before", address)))
    fetcher = await wva_process("fetcher", fetcher_env(nats_server.url, WVA_COLLECTOR="scrape"))
    await eventually(lambda: _tracked(nats_client, "before"), timeout=10, what="before tracked")
    return address, fetcher


async def test_deleted_streams_are_recreated_and_followers_resume(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService
) -> None:
    address, fetcher = await _following(nats_server, nats_client, hostile_http, wva_process)

    for name in (streams.TARGETS, streams.METRICS, streams.EVENTS):
        await nats_client.jetstream().delete_stream(S.stream_name(name))
    await _recovered(nats_client, fetcher, address, "after")
    assert "streams were missing" in fetcher.log() and "lost the consumer" in fetcher.log()
    assert fetcher.alive


@pytest.mark.parametrize("store", ["kept", "wiped"])
async def test_nats_killed_and_restarted_with_its_store_or_an_empty_one(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService, store: str
) -> None:
    address, fetcher = await _following(nats_server, nats_client, hostile_http, wva_process)

    assert nats_server.proc is not None
    nats_server.proc.kill()  # kill -9
    nats_server.proc.wait()

    async def not_ready() -> bool:
        return not await fetcher.ready()

    await eventually(not_ready, timeout=10, what="/readyz false while NATS is down")
    if store == "wiped":
        shutil.rmtree(nats_server.store_dir)
    nats_server.start()
    restarted = time.monotonic()
    await _recovered(nats_client, fetcher, address, "after")
    # Reconnect (1 s apart) + the follower's check (2 s idle) + one fetch interval (1 s), with margin
    # for a loaded machine. nats-py's own ordered consumer, alone, resumed only after two missed
    # heartbeats (10-20 s), and never on a re-created stream.
    took = time.monotonic() - restarted
    assert took < 8.0, f"recovered {took:.1f}s after NATS was back"
    assert await _tracked(nats_client, "before")  # what it knew survives (kept: the stream replays it too)
    assert fetcher.alive


async def test_readyz_is_false_while_the_streams_cannot_be_read(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService
) -> None:
    """NATS up, JetStream off: connected, but no stream to read or write."""
    address = await _pod(hostile_http)
    await streams.ensure(nats_client.jetstream(), S, streams.StreamSpec())
    fetcher = await wva_process("fetcher", fetcher_env(nats_server.url, WVA_COLLECTOR="scrape"))
    nats_server.stop()
    assert nats_server.binary is not None
    plain = subprocess.Popen(  # noqa: ASYNC220 - starting a server is quick; it runs beside the loop
        [nats_server.binary, "-a", "127.0.0.1", "-p", str(nats_server.port), "-l", f"{nats_server.log_path}.plain"],
    )
    try:
        async def streams_down() -> bool:
            answer = await fetcher.readyz()
            if answer is None or answer[0] != 503:
                return False
            checks = json.loads(answer[1])["checks"]
            return bool(checks["nats"]) and not checks["streams"]

        await eventually(streams_down, timeout=20, what=f"connected, streams not ready\n{fetcher.tail()}")
    finally:
        plain.terminate()
        plain.wait(5)
    nats_server.start()  # JetStream again, with the store it had
    await _recovered(nats_client, fetcher, address, "after")


async def test_tombstones_expire_after_their_ttl(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService
) -> None:
    address = await _pod(hostile_http)
    js = nats_client.jetstream()
    fetcher = await wva_process("fetcher", fetcher_env(nats_server.url, WVA_COLLECTOR="scrape", WVA_TOMBSTONE_TTL="1s"))
    feed = await Feed().attach(nats_client, "wva.metrics.>")
    await _publish_target(nats_client, _target("gone", address))
    await eventually(lambda: _tracked(nats_client, "gone"), timeout=10, what="gone tracked")
    deleted = messages.TargetDeleted(namespace=NS, name="gone", at=messages.utcnow())
    await _publish_target(nats_client, deleted)
    await eventually(lambda: bool(feed.of(messages.MetricsDeleted, "gone")), timeout=10, what="metrics tombstone")

    async def expired() -> bool:
        return await last_message(js, S.stream_name(streams.METRICS), S.metrics(NS, "gone")) is None

    await eventually(expired, timeout=10, what="the metrics tombstone expired")
    # A fetcher that starts now finds nothing to forget; the one running forgot the VA.
    assert not await _tracked(nats_client, "gone")
    assert fetcher.alive
    # The configuration that lets a server drop them: per-message TTL on the last-value streams.
    assert (await js.stream_info(S.stream_name(streams.TARGETS))).config.allow_msg_ttl


async def test_the_watchers_target_tombstone_expires(
    kube_api: KubeApiEmulator, watcher_service: Callable[..., Awaitable[RunningWatcher]], watcher_feed: WatcherFeed
) -> None:
    labels = {"app": "llama"}
    kube_api.store.create("namespaces", {"metadata": {"name": "default"}}) if kube_api.store.find(
        "namespaces", None, "default"
    ) is None else None
    kube_api.store.create(
        "deployments",
        {"metadata": {"name": "llama", "namespace": "default"}, "spec": {"replicas": 1, "selector": {"matchLabels": labels},
         "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "vllm", "image": "x"}]}}}},
    )
    kube_api.store.create(
        "variantautoscalings",
        {"apiVersion": kube.API_VERSION, "kind": kube.KIND, "metadata": {"name": "llama", "namespace": "default"},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama"}, "modelID": "m"}},
    )
    await watcher_service(tombstone_ttl=1.0)
    await watcher_feed.wait_for(lambda: isinstance(watcher_feed.latest("llama"), messages.Target), what="target")
    kube_api.store.delete("variantautoscalings", "default", "llama")
    await watcher_feed.wait_for(lambda: isinstance(watcher_feed.latest("llama"), messages.TargetDeleted), what="tombstone")

    async def expired() -> bool:
        return ("default", "llama") not in await watcher_feed.stream_state()

    await eventually(expired, timeout=10, what="the target tombstone expired from the stream")
