"""Which Prometheus failures are retried: against a small HTTP server that answers as told."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from services.fetcher import telemetry
from services.fetcher.collector import QueryError
from services.fetcher.prometheus import PrometheusCollector
from services.fetcher.settings import FetcherSettings

OK = {"status": "success", "data": {"resultType": "vector", "result": []}}


class FakePrometheus:
    def __init__(self) -> None:
        self.answers: list[int] = []
        self.seen = 0
        self.delay = 0.0
        self.body = OK
        self.encodings: list[tuple[str, str]] = []  # (asked for, sent)

    async def query(self, request: web.Request) -> web.Response:
        self.seen += 1
        await asyncio.sleep(self.delay)
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            response = web.json_response(self.body)
            response.enable_compression()  # as Prometheus: gzip when the client accepts it
            await response.prepare(request)
            self.encodings.append((request.headers.get("Accept-Encoding", ""), response.headers.get("Content-Encoding", "")))
            return response
        return web.json_response({"status": "error", "error": "nope"}, status=status)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakePrometheus, str]]:
    server = FakePrometheus()
    app = web.Application()
    app.router.add_get("/api/v1/query", server.query)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _query(url: str, **settings: float) -> tuple[PrometheusCollector, list[int]]:
    collector = PrometheusCollector(FetcherSettings(prometheus_url=url, **settings))  # type: ignore[arg-type]
    return collector, [0]


@pytest.mark.parametrize("transient", [503, 429, 502])
async def test_transient_errors_are_retried(fake: tuple[FakePrometheus, str], transient: int) -> None:
    server, url = fake
    server.answers = [transient, transient]
    collector, sent = await _query(url)
    retries = telemetry.QUERY_RETRIES.labels(backend=collector.name)
    before = retries._value.get()
    try:
        loop = asyncio.get_running_loop()
        await collector.query("up", at=time.time(), deadline=loop.time() + 5, sent=sent)
        assert server.seen == 3 and sent == [3]
        assert retries._value.get() == before + 2  # visible to operators, not only in the cycle log
    finally:
        await collector.aclose()


async def test_a_bad_query_fails_at_once(fake: tuple[FakePrometheus, str]) -> None:
    server, url = fake
    server.answers = [400]
    collector, sent = await _query(url)
    try:
        loop = asyncio.get_running_loop()
        with pytest.raises(QueryError, match="HTTP 400") as err:
            await collector.query("up(", at=time.time(), deadline=loop.time() + 5, sent=sent)
        assert not err.value.transient and server.seen == 1
    finally:
        await collector.aclose()


async def test_a_hanging_prometheus_is_bounded_by_timeout_and_budget(fake: tuple[FakePrometheus, str]) -> None:
    server, url = fake
    server.delay = 1.0
    collector, sent = await _query(url, prometheus_timeout=0.2, fetch_budget=0.5)
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(QueryError, match="timed out"):
            await collector.query("up", at=time.time(), deadline=loop.time() + 0.5, sent=sent)
        assert loop.time() - t0 < 1.0 and sent[0] >= 2  # retried, then the budget ran out
    finally:
        await collector.aclose()


@pytest.mark.parametrize("compression", [False, True])
async def test_answers_are_uncompressed_unless_asked_for(fake: tuple[FakePrometheus, str], compression: bool) -> None:
    server, url = fake
    series = {"metric": {"namespace": "ns", "pod": "p-0"}, "value": [1, "0.5"]}
    server.body = {"status": "success", "data": {"resultType": "vector", "result": [series] * 50}}
    collector = PrometheusCollector(FetcherSettings(prometheus_url=url, prometheus_compression=compression))
    try:
        loop = asyncio.get_running_loop()
        found = await collector.query("up", at=time.time(), deadline=loop.time() + 5)
        assert len(found) == 50 and found[0].number() == 0.5
        asked, got = server.encodings[-1]
        assert ("gzip" in asked) is compression and bool(got) is compression  # got: gzip or deflate
    finally:
        await collector.aclose()
