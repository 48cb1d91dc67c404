"""The premise of the lab's discovery model (services/lab/observation.py) and of the sandbox's
`prometheus: discovers new pods every 5s from t=…` line, on a real Prometheus: a target added to the
file_sd document becomes active only at a tick of a fixed 5 s grid that starts when Prometheus turns
ready (`PrometheusServer.ready_at`), not when the file changes."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from services.sandbox.servers import DISCOVERY_INTERVAL
from tests.fixtures.servers import PrometheusServer

pytestmark = pytest.mark.slow

SLACK = 0.3  # the readiness poll (20 ms), fsnotify, and the 20 ms poll below


async def _active_pods(prometheus: PrometheusServer, session: aiohttp.ClientSession) -> set[str]:
    async with session.get(f"{prometheus.url}/api/v1/targets", params={"state": "active"}) as resp:
        body = await resp.json()
    return {t["labels"].get("pod", "") for t in body["data"]["activeTargets"]}


@pytest.mark.timeout(60)
async def test_new_targets_become_active_on_a_five_second_grid_from_readiness(
    prometheus_server: PrometheusServer,
) -> None:
    ready_at = prometheus_server.ready_at
    assert ready_at is not None
    me = f"127.0.0.1:{prometheus_server.port}"  # any target does: Prometheus' own /metrics
    async with aiohttp.ClientSession() as session:
        # Two targets added at different points of the grid (one tick in, then 1.5 s past a tick):
        # each must wait for the next tick, however long that is.
        for pod, add_at in (("first", ready_at + DISCOVERY_INTERVAL + 2.0), ("second", None)):
            if add_at is None:
                add_at = time.monotonic() + 1.5
            await asyncio.sleep(max(0.0, add_at - time.monotonic()))
            added = time.monotonic()
            document = json.loads(prometheus_server.sd_path.read_text())
            prometheus_server.write_targets([*document, {"targets": [me], "labels": {"pod": pod}}])
            while pod not in await _active_pods(prometheus_server, session):
                assert time.monotonic() - added < 2 * DISCOVERY_INTERVAL + SLACK, f"{pod} never became active"
                await asyncio.sleep(0.02)
            active = time.monotonic()
            ticks = (active - ready_at) / DISCOVERY_INTERVAL
            tick = ready_at + round(ticks) * DISCOVERY_INTERVAL
            assert abs(active - tick) < SLACK, f"{pod} active {active - ready_at:.2f}s after readiness: off the grid"
            assert tick - added > 0 and tick - added < DISCOVERY_INTERVAL + SLACK, (
                f"{pod} added {added - ready_at:.2f}s, active {active - ready_at:.2f}s after readiness: not the next tick"
            )
