"""Two watchers with leases (docs/design.md §11): both watch, one publishes; when it leaves, the standby
takes over with a first pass against what the stream holds (no needless invalidation) and publishes the
changes that follow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.sandbox.kubeapi import KubeApiEmulator
from tests.fixtures.watcher import SUBJECTS, Feed, RunningWatcher
from tests.integration.watcher.test_watcher_service import deployment, scale, settled, va

StartWatcher = Callable[..., Awaitable[RunningWatcher]]
HA = {"lease_ttl": 1.5}  # and lease_backend: each test runs with both


@pytest.mark.parametrize("backend", ["nats", "kubernetes"])
async def test_one_watcher_publishes_and_the_standby_takes_over(
    kube_api: KubeApiEmulator, watcher_service: StartWatcher, watcher_feed: Feed, nats_client: Client, backend: str
) -> None:
    publishers: list[str] = []  # the outbox's per-process prefix of every message's Nats-Msg-Id

    async def on(msg: Msg) -> None:
        publishers.append((msg.headers or {}).get("Nats-Msg-Id", "").split("-")[0])

    for kind in ("targets", "invalidate"):
        await nats_client.subscribe(f"{SUBJECTS.prefix}.{kind}.>", cb=on)
    for name in ("llama", "mistral"):
        kube_api.store.create("deployments", deployment(name, replicas=1), namespace="default")
        kube_api.store.create("variantautoscalings", va(name), namespace="default")
    first = await watcher_service(**HA, lease_backend=backend)
    await watcher_feed.wait_for(settled(watcher_feed, "llama", replicas=1), what="the first pass")
    second = await watcher_service(**HA, lease_backend=backend)  # a hot standby: ready once its index is complete
    assert second.runtime is not None and first.runtime is not None
    assert second.runtime.leases is not None and first.runtime.leases is not None
    assert type(first.runtime.leases.store).__name__ == {"nats": "NatsLeaseStore", "kubernetes": "KubernetesLeaseStore"}[backend]
    await asyncio.sleep(1.0)  # a few lease rounds: the standby must not take the lease or publish
    assert first.runtime.leases.owned == {"watcher"} and second.runtime.leases.owned == frozenset()

    watcher_feed.clear()
    publishers.clear()
    scale(kube_api, "llama", 2)
    await watcher_feed.wait_for(settled(watcher_feed, "llama", replicas=2), what="the change")
    await asyncio.sleep(0.5)
    # one publisher, and the change invalidated once
    assert len(set(publishers)) == 1 and publishers, publishers
    assert watcher_feed.reasons("llama") == ["replicas_changed"]
    publishers_before = set(publishers)

    watcher_feed.clear()
    assert await first.stop() == 0  # gives the lease back
    left = time.monotonic()
    await_taken = time.monotonic() + 5
    while "watcher" not in second.runtime.leases.owned and time.monotonic() < await_taken:
        await asyncio.sleep(0.05)
    assert "watcher" in second.runtime.leases.owned
    assert time.monotonic() - left < 1.5  # at its next round, well within a TTL
    await asyncio.sleep(0.5)
    # the take-over's first pass republished the targets; nothing changed meanwhile, so no invalidation
    assert {t.name for t in watcher_feed.targets} == {"llama", "mistral"}
    assert watcher_feed.invalidations == []
    scale(kube_api, "mistral", 3)
    await watcher_feed.wait_for(settled(watcher_feed, "mistral", replicas=3), what="the new publisher")
    assert watcher_feed.reasons("mistral") == ["replicas_changed"]
    assert len(set(publishers)) == 2 and set(publishers) > publishers_before  # the standby took over
