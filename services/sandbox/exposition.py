"""A prometheus_client registry served over HTTP on 127.0.0.1: what the emulated vLLM pods and the
emulated inference gateway (the router) expose for Prometheus or the fetcher to read.

    endpoint = serving(collector)       # a registry of its own holding `collector`
    port = await endpoint.start()       # GET /metrics (text format 0.0.4), GET /health
    await endpoint.stop()
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class MetricsEndpoint:
    """Serves `registry` on `/metrics`; `port` is set once started (port 0 means the kernel's pick)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def text(self) -> bytes:
        return generate_latest(self.registry)

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.text(), headers={"Content-Type": CONTENT_TYPE})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")


def serving(collector: Collector) -> MetricsEndpoint:
    """An endpoint for one custom collector, read at every scrape (not started yet)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return MetricsEndpoint(registry)
