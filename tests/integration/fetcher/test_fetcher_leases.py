"""Two fetchers sharing partitions through leases (docs/design.md §11): each publishes only its groups'
VAs (counted per VA per cycle), only the owner answers a fetch request, and a clean leave hands the
partition over without a gap in the snapshots."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.aio.client import Client

from shared import messages
from shared.partitions import partition_of
from tests.fixtures.fetcher import Pods, RunFetcher, make_target
from tests.fixtures.servers import NatsServer
from tests.integration.fetcher.helpers import S, Snapshots, publish_targets

NS = "team-a"
INTERVAL = 0.5


def models() -> tuple[str, str]:
    by_partition: dict[int, str] = {}
    for i in range(50):
        by_partition.setdefault(partition_of(NS, f"model-{i}", 2), f"model-{i}")
    return by_partition[0], by_partition[1]


async def replies(nc: Client, subject: str, window: float = 1.0) -> int:
    inbox = nc.new_inbox()
    got: list[object] = []

    async def on(msg: object) -> None:
        got.append(msg)

    sub = await nc.subscribe(inbox, cb=on)
    request = messages.FetchRequest(namespace=NS, name=subject, at=messages.utcnow())
    await nc.publish(S.fetch(NS, subject), messages.encode(request), reply=inbox)
    await asyncio.sleep(window)
    await sub.unsubscribe()
    return len(got)


@pytest.mark.parametrize("backend", ["nats", "kubernetes"])
async def test_two_fetchers_publish_each_va_once_per_cycle_and_hand_over(
    nats_server: NatsServer, nats_client: Client, vllm_pods: Pods, run_fetcher: RunFetcher, backend: str,
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the fetcher has no kubeconfig setting: $KUBECONFIG here, its service account in a cluster
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    m0, m1 = models()
    pod = await vllm_pods.start(NS, "llama-0")
    targets = [make_target(NS, f"va-{i}", [pod], model_id=(m0, m1)[i % 2]) for i in range(8)]
    await publish_targets(nats_client, *targets)
    settings = {
        "nats_url": nats_server.url, "collector": "scrape", "fetch_interval": INTERVAL, "cache_ttl": 30.0,
        "lease_backend": backend, "partitions": 2, "lease_ttl": 1.5,
    }
    a = await run_fetcher(**settings)
    await a.wait_ready()
    b = await run_fetcher(**settings)
    await b.wait_ready()
    leases_a, leases_b = a.runtime.leases, b.runtime.leases
    assert leases_a is not None and leases_b is not None
    assert type(leases_a.store).__name__ == {"nats": "NatsLeaseStore", "kubernetes": "KubernetesLeaseStore"}[backend]
    deadline = time.monotonic() + 10
    while not (len(leases_a.owned) == 1 and len(leases_b.owned) == 1) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert (len(leases_a.owned), len(leases_b.owned)) == (1, 1), (leases_a.report(), leases_b.report())

    snapshots = Snapshots()
    await snapshots.attach(nats_client)
    window = 3.0
    await asyncio.sleep(window)
    counts = {t.name: snapshots.count(NS, t.name) for t in targets}
    cycles = window / INTERVAL
    # one publisher per VA: at most one snapshot per cycle (and one cycle's worth of slack)
    assert all(1 <= n <= cycles + 1 for n in counts.values()), counts

    # only the owner of a VA's partition answers its fetch request
    for t in targets[:2]:
        assert await replies(nats_client, t.name) == 1

    # a leaves cleanly: b takes a's partition at its next round; snapshots go on without a gap
    a_groups = {p for p in leases_a.owned}
    mine = [t for t in targets if str(partition_of(NS, t.model_id, 2)) in a_groups]
    before = {t.name: snapshots.count(NS, t.name) for t in mine}
    assert await a.close() == 0
    left = time.monotonic()
    await snapshots.wait(lambda: all(snapshots.count(NS, t.name) > before[t.name] for t in mine), timeout=1.5 + INTERVAL + 2)
    assert time.monotonic() - left < 1.5 + INTERVAL + 1.0
    assert leases_b.owned == frozenset({"0", "1"})
