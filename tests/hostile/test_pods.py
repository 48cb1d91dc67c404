"""Issue #12 items 3 and 15, scrape backend: whatever one pod serves is that pod's problem only.

`wva fetcher` (a process, scrape backend) reads a good pod and pods that serve invalid UTF-8, bodies
over the limit (declared, or streamed without a length), text that is not the exposition format, a
redirect elsewhere, an error page with a secret in it, and nothing for longer than the timeout."""

from __future__ import annotations

from aiohttp import web
from nats.aio.client import Client

from shared import messages, streams
from shared.subjects import Subjects
from tests.fixtures.http import Handler, HostileHttp
from tests.fixtures.servers import NatsServer
from tests.fixtures.services import StartService
from tests.hostile.conftest import NS, Feed, eventually, fetcher_env
from tests.hostile.endpoints import GOOD_POD, SECRET, bad_metrics, text

S = Subjects()
LIMIT = 64 * 1024


async def test_each_hostile_pod_is_its_own_vas_problem(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService
) -> None:
    async def canary(_: web.Request) -> web.Response:
        return web.Response(text=GOOD_POD)

    canary_address = await hostile_http(canary)

    async def good(_: web.Request) -> web.Response:
        return text(GOOD_POD.encode())

    handlers: dict[str, tuple[Handler, str | None]] = {"good": (good, None)}
    for name, (handler, reason) in bad_metrics(canary=canary_address, limit=LIMIT).items():
        handlers[name] = (handler, f"pod {name}-0: {reason}")
    js = nats_client.jetstream()
    await streams.ensure(js, S, streams.StreamSpec())
    for name, (handler, _) in handlers.items():
        address = await hostile_http(handler)
        target = messages.Target(
            namespace=NS, name=name, at=messages.utcnow(), model_id="m",
            pods=(messages.PodRef(name=f"{name}-0", ready=True, address=address),),
        )
        await js.publish(S.targets(NS, name), messages.encode(target))
    feed = await Feed().attach(nats_client, "wva.metrics.>")
    fetcher = await wva_process(
        "fetcher", fetcher_env(nats_server.url, WVA_COLLECTOR="scrape", WVA_SCRAPE_MAX_BYTES=LIMIT)
    )

    def last(name: str) -> messages.MetricsSnapshot | None:
        got = feed.of(messages.MetricsSnapshot, name)
        return got[-1] if got else None

    await eventually(lambda: all(len(feed.of(messages.MetricsSnapshot, n)) >= 2 for n in handlers), timeout=20,
                     what=f"two cycles of every VA\n{fetcher.tail()}")
    assert fetcher.alive
    for name, (_, reason) in handlers.items():
        snapshot = last(name)
        assert snapshot is not None
        if reason is None:
            assert snapshot.status != "unavailable" and snapshot.replicas[0].kv_cache_usage == 0.5, snapshot
        else:
            assert (snapshot.status, snapshot.reason) == ("unavailable", reason)
        others = [f"{n}-0" for n in handlers if n != name]
        assert not any(pod in snapshot.reason for pod in others), snapshot.reason  # one VA, its own pods
    every_reason = " ".join(s.reason for _, s in feed.messages if isinstance(s, messages.MetricsSnapshot))
    assert SECRET not in every_reason
    assert hostile_http.hits[canary_address] == 0  # the redirect was never followed
