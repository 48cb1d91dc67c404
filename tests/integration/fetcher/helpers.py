"""Shared bits of the fetcher integration tests (not fixtures: plain functions)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
from nats.aio.client import Client

from shared import messages, natsio, streams
from shared.subjects import SubjectKind, Subjects
from tests.fixtures.servers import PrometheusServer

S = Subjects()


class Snapshots:
    """Every message on wva.metrics.>, by VA, in arrival order (a core subscription)."""

    def __init__(self) -> None:
        self.by_va: dict[tuple[str, str], list[messages.MetricsMessage]] = {}
        self.changed = asyncio.Event()

    async def attach(self, nc: Client) -> None:
        async def on(msg: Any) -> None:
            decoded = messages.metrics_decoder.decode(msg.data)
            self.by_va.setdefault((decoded.namespace, decoded.name), []).append(decoded)
            self.changed.set()

        await nc.subscribe(S.wildcard(SubjectKind.METRICS), cb=on)

    def last(self, namespace: str, name: str) -> messages.MetricsMessage | None:
        got = self.by_va.get((namespace, name))
        return got[-1] if got else None

    def count(self, namespace: str, name: str) -> int:
        return len(self.by_va.get((namespace, name), []))

    async def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def publish_targets(nc: Client, *targets: messages.Target) -> None:
    js = nc.jetstream()
    await streams.ensure(js, S, streams.StreamSpec())
    for t in targets:
        await natsio.publish(js, S.targets(t.namespace, t.name), t)


async def prometheus_queries_served(prom: PrometheusServer) -> int:
    """Instant queries Prometheus itself has answered (its own /metrics)."""
    async with aiohttp.ClientSession() as session, session.get(f"{prom.url}/metrics") as resp:
        text = await resp.text()
    total = 0
    for line in text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line:
            total += int(float(re.split(r"\s+", line)[-1]))
    return total
