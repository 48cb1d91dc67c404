"""Issue #12 items 3, 13 and 15, Prometheus backend: `wva fetcher` (a process) against a "Prometheus"
that answers as the test tells it — odd 200s, error pages with secrets in them, redirects, and a
bearer token with a trailing newline. Snapshot reasons are short, generic and secret-free."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from nats.aio.client import Client

from shared import messages, streams
from shared.subjects import Subjects
from tests.fixtures.http import HostileHttp
from tests.fixtures.servers import NatsServer
from tests.fixtures.services import ServiceProcess, StartService
from tests.hostile.conftest import NS, Feed, eventually, fetcher_env

S = Subjects()
SECRET = "SECRET-FROM-THE-BACKEND"
PASSWORD = "hunter2-pw"
TOKEN = "tok-0123456789"


async def _one_va(nc: Client) -> Feed:
    js = nc.jetstream()
    await streams.ensure(js, S, streams.StreamSpec())
    target = messages.Target(
        namespace=NS, name="llama", at=messages.utcnow(), model_id="m",
        pods=(messages.PodRef(name="llama-0", ready=True),),
    )
    await js.publish(S.targets(NS, "llama"), messages.encode(target))
    return await Feed().attach(nc, "wva.metrics.>")


async def _snapshots(feed: Feed, fetcher: ServiceProcess, n: int = 2) -> list[messages.MetricsSnapshot]:
    await eventually(
        lambda: len(feed.of(messages.MetricsSnapshot, "llama")) >= n, timeout=15, what=f"{n} snapshots\n{fetcher.tail()}"
    )
    return feed.of(messages.MetricsSnapshot, "llama")


@pytest.mark.parametrize(
    "body",
    [
        {"status": "success"},  # 200 without data: a KeyError in the client library
        {"status": "success", "data": {"resultType": "vector", "result": "not a list"}},
        {"status": "success", "data": None},
    ],
    ids=["no-data", "result-not-a-list", "data-null"],
)
async def test_a_200_of_the_wrong_shape_is_an_unavailable_snapshot(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService,
    body: dict[str, Any],
) -> None:
    async def prometheus(_: web.Request) -> web.Response:
        return web.json_response(body)

    address = await hostile_http(prometheus)
    feed = await _one_va(nats_client)
    fetcher = await wva_process("fetcher", fetcher_env(nats_server.url, WVA_PROMETHEUS_URL=f"http://{address}"))
    snapshots = await _snapshots(feed, fetcher)
    assert fetcher.alive
    assert {(s.status, s.reason) for s in snapshots} == {
        ("unavailable", "Prometheus sent an answer of an unexpected shape")
    }


async def test_series_of_the_wrong_shape_are_skipped(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService
) -> None:
    series = [1, "x", None, {"metric": 5}, {"metric": {"namespace": NS, "pod": ["llama-0"]}, "value": "v"},
              {"metric": {"namespace": NS, "pod": "llama-0", "num_gpu_blocks": "-5"}, "value": [0, "0.5"]},
              # an integer too large for a float (it crashed the fetcher once)
              {"metric": {"namespace": NS, "pod": "llama-9"}, "value": [0, 10**400]}]

    async def prometheus(_: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": series}})

    address = await hostile_http(prometheus)
    feed = await _one_va(nats_client)
    fetcher = await wva_process("fetcher", fetcher_env(nats_server.url, WVA_PROMETHEUS_URL=f"http://{address}"))
    snapshot = (await _snapshots(feed, fetcher))[-1]
    assert fetcher.alive and snapshot.status != "unavailable", snapshot
    assert snapshot.replicas[0].kv_cache_usage == 0.5 and snapshot.replicas[0].num_gpu_blocks is None


@pytest.mark.parametrize(
    ("status", "headers", "reason"),
    [
        (503, {}, "HTTP 503 from Prometheus"),
        (401, {"WWW-Authenticate": f"Bearer realm={SECRET}"}, "HTTP 401 from Prometheus"),
        (302, {"Location": "http://CANARY/api/v1/query"}, "Prometheus answered with a redirect (not followed)"),
    ],
)
async def test_backend_text_and_credentials_never_reach_a_snapshot_or_the_log(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService,
    status: int, headers: dict[str, str], reason: str,
) -> None:
    async def canary(_: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    canary_address = await hostile_http(canary)

    async def prometheus(request: web.Request) -> web.Response:
        located = {k: v.replace("CANARY", canary_address) for k, v in headers.items()}
        return web.Response(status=status, text=f"<html>{SECRET} {request.headers.get('Authorization')}</html>",
                            headers=located)

    address = await hostile_http(prometheus)
    feed = await _one_va(nats_client)
    fetcher = await wva_process(
        "fetcher", fetcher_env(nats_server.url, WVA_PROMETHEUS_URL=f"http://wva:{PASSWORD}@{address}",
                               WVA_PROMETHEUS_TOKEN=TOKEN),
    )
    snapshots = await _snapshots(feed, fetcher)
    assert {(s.status, s.reason) for s in snapshots} == {("unavailable", reason)}
    log = fetcher.log()
    assert "Prometheus collection failed" in log  # the operator still learns what happened
    for secret in (SECRET, PASSWORD, TOKEN):
        assert secret not in log, secret
        assert not any(secret in s.reason for s in snapshots)
    assert hostile_http.hits[canary_address] == 0


async def test_a_token_with_a_trailing_newline_is_sent_stripped_from_env_and_file(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService,
    tmp_path: Path,
) -> None:
    """What `kubectl create secret --from-file` gives: "<token>\\n". It became "Invalid header value
    b'Bearer <token>\\n'" in every VA's status."""
    seen: list[str] = []

    async def prometheus(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="unauthorized")
        result = [{"metric": {"namespace": NS, "pod": "llama-0"}, "value": [0, "0.5"]}]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    address = await hostile_http(prometheus)
    feed = await _one_va(nats_client)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    for source in ({"WVA_PROMETHEUS_TOKEN": TOKEN + "\n"}, {"WVA_PROMETHEUS_TOKEN_FILE": str(token_file)}):
        fetcher = await wva_process("fetcher", fetcher_env(nats_server.url, WVA_PROMETHEUS_URL=f"http://{address}", **source))
        before = len(feed.of(messages.MetricsSnapshot, "llama"))
        snapshot = (await _snapshots(feed, fetcher, before + 2))[-1]
        assert snapshot.status != "unavailable" and TOKEN not in snapshot.reason, snapshot
        assert set(seen) == {f"Bearer {TOKEN}"}
        assert TOKEN not in fetcher.log()
        await fetcher.stop()


@pytest.mark.parametrize("bad", [f"{TOKEN} x", f"{TOKEN}\nsecond-line", f"{TOKEN}\x01", f"{TOKEN}ø"])
async def test_a_token_that_cannot_be_sent_stops_the_fetcher_without_showing_it(
    nats_server: NatsServer, wva_process: StartService, bad: str
) -> None:
    fetcher = await wva_process("fetcher", fetcher_env(nats_server.url, WVA_PROMETHEUS_TOKEN=bad), ready=False)
    await eventually(lambda: not fetcher.alive, timeout=15, what="the fetcher refuses the token")
    assert fetcher.returncode == 2
    text = fetcher.log()
    assert "WVA_PROMETHEUS_TOKEN" in text and TOKEN not in text and json.dumps(bad) not in text


async def test_a_prometheus_that_drips_its_answer_does_not_hold_the_fetcher(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService
) -> None:
    """requests' timeout is per socket read: an answer sent a byte every 0.3 s never trips it."""

    async def prometheus(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for byte in b'{"status":"success","data":{"resultType":"vector","result":[]}}':
            await resp.write(bytes([byte]))
            await asyncio.sleep(0.3)
        return resp

    address = await hostile_http(prometheus)
    feed = await _one_va(nats_client)
    fetcher = await wva_process(
        "fetcher", fetcher_env(nats_server.url, WVA_PROMETHEUS_URL=f"http://{address}", WVA_FETCH_INTERVAL="1s",
                               WVA_PROMETHEUS_TIMEOUT="1s", WVA_FETCH_BUDGET="2s"),
    )
    started = time.monotonic()
    first = (await _snapshots(feed, fetcher, 1))[0]
    # One collection: its queries give up after the timeout (+0.5 s) and the budget; not the ~20 s drip.
    assert time.monotonic() - started < 8
    assert (first.status, first.reason) == ("unavailable", "Prometheus query timed out after 1s")
    await _snapshots(feed, fetcher, 3)  # and the next cycles come, one per interval or budget
    assert fetcher.alive


@pytest.mark.parametrize("cut", ["hang-up", "short-body"])
async def test_a_prometheus_that_breaks_the_connection_is_retried_as_transient(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService, cut: str
) -> None:
    """What requests raises for these is not a ConnectionError (ChunkedEncodingError, …): still transient."""

    async def prometheus(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        if cut == "hang-up":
            request.transport.close()
            return web.Response()
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "5000"})
        await resp.prepare(request)
        await resp.write(b'{"status":"success","data":')
        request.transport.close()
        return resp

    address = await hostile_http(prometheus)
    feed = await _one_va(nats_client)
    fetcher = await wva_process("fetcher", fetcher_env(nats_server.url, WVA_PROMETHEUS_URL=f"http://{address}"))
    snapshot = (await _snapshots(feed, fetcher))[-1]
    assert snapshot.status == "unavailable" and snapshot.reason.startswith("Prometheus"), snapshot
    assert await fetcher.wait_metric("wva_fetcher_query_retries_total", 1, backend="prometheus") >= 1
    assert fetcher.alive
