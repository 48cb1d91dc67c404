"""Issue #12 items 3 and 15, scrape backend: whatever one pod serves is that pod's problem only.

`wva fetcher` (a process, scrape backend) reads a good pod and pods that serve invalid UTF-8, bodies
over the limit (declared, or streamed without a length), text that is not the exposition format, a
redirect elsewhere, an error page with a secret in it, and nothing for longer than the timeout."""

from __future__ import annotations

import asyncio

from aiohttp import web
from nats.aio.client import Client

from shared import messages, streams
from shared.subjects import Subjects
from tests.fixtures.http import HostileHttp
from tests.fixtures.servers import NatsServer
from tests.fixtures.services import StartService
from tests.hostile.conftest import NS, Feed, eventually, fetcher_env

S = Subjects()
LIMIT = 64 * 1024
SECRET = "SECRET-BODY-TEXT"
GOOD = """\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.5
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 1.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 4.0
"""


async def test_each_hostile_pod_is_its_own_vas_problem(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService
) -> None:
    async def canary(_: web.Request) -> web.Response:
        return web.Response(text=GOOD)

    canary_address = await hostile_http(canary)

    def text(body: bytes, status: int = 200) -> web.Response:
        return web.Response(body=body, status=status, headers={"Content-Type": "text/plain; charset=utf-8"})

    async def good(_: web.Request) -> web.Response:
        return text(GOOD.encode())

    async def not_utf8(_: web.Request) -> web.Response:
        return text(GOOD.encode() + b"# \xff\xfe\xfd\n")

    async def huge(_: web.Request) -> web.Response:
        return text(GOOD.encode() * (4 * LIMIT // len(GOOD)))

    async def huge_streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)  # chunked: no Content-Length to refuse it by
        for _ in range(64):
            await resp.write(b"# padding " * 400)
        return resp

    async def garbage(_: web.Request) -> web.Response:
        return text(b'vllm:kv_cache_usage_perc{model_name="m" 0.5\nnot { the } format\n')

    async def redirect(_: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": f"http://{canary_address}/metrics"})

    async def error_page(_: web.Request) -> web.Response:
        return text(f"<html>{SECRET} internal error</html>".encode(), status=500)

    async def hang_up(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()  # the client sees ServerDisconnectedError (not an OSError)
        return text(b"")

    async def cut_short(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain", "Content-Length": "10000"})
        await resp.prepare(request)
        await resp.write(GOOD.encode())
        assert request.transport is not None
        request.transport.close()  # ClientPayloadError: the body ends before its length
        return resp

    async def silent(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return text(GOOD.encode())

    handlers = {
        "good": (good, None),
        "utf8": (not_utf8, "pod utf8-0: metrics are not UTF-8 text"),
        "huge": (huge, f"pod huge-0: metrics body larger than {LIMIT} bytes"),
        "stream": (huge_streamed, f"pod stream-0: metrics body larger than {LIMIT} bytes"),
        "garbage": (garbage, "pod garbage-0: unreadable metrics (not the Prometheus text format)"),
        "redirect": (redirect, "pod redirect-0: HTTP 302 (redirects are not followed)"),
        "error": (error_page, "pod error-0: HTTP 500"),
        "silent": (silent, "pod silent-0: timed out after 1s"),
        "hangup": (hang_up, "pod hangup-0: unreachable"),
        "cut": (cut_short, "pod cut-0: unreachable"),
    }
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
