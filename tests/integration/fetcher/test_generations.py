"""Issue #13 §1, the fetcher's side: the snapshot that follows an invalidation names the Deployment
generation (and template hash) it describes — when the invalidation overtakes its Target, the refresh
waits for that Target instead of collecting with the one before the change."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from shared import messages
from tests.fixtures.fetcher import RunFetcher, StaticServer
from tests.fixtures.servers import NatsServer
from tests.integration.fetcher.helpers import Snapshots, publish_targets

GAUGES = """\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.5
"""


def _target(address: str, generation: int) -> messages.Target:
    return messages.Target(
        namespace="team-a", name="llama", at=messages.utcnow(), model_id="m", resolved=True,
        deployment_generation=generation, template_hash=f"hash-{generation}",
        pods=(messages.PodRef(name=f"llama-{generation}", ready=True, address=address),),
    )


async def test_an_invalidation_ahead_of_its_target_gets_the_new_generations_snapshot(
    nats_server: NatsServer, nats_client: Client, static_metrics: StaticServer, run_fetcher: RunFetcher
) -> None:
    pod = await static_metrics(GAUGES)
    await publish_targets(nats_client, _target(pod, 1))
    snapshots = Snapshots()
    await snapshots.attach(nats_client)
    handle = await run_fetcher(nats_url=nats_server.url, collector="scrape", fetch_interval=0.0)
    await handle.wait_ready()

    # The watcher's invalidation for generation 2 arrives before its Target (another stream).
    invalidation = messages.Invalidation(
        namespace="team-a", name="llama", at=messages.utcnow(), reason="template_changed",
        deployment_generation=2, template_hash="hash-2",
    )
    await nats_client.jetstream().publish("wva.invalidate.team-a.llama", messages.encode(invalidation))
    await asyncio.sleep(0.5)  # a refresh with generation 1 would have been published by now (~50 ms)
    await publish_targets(nats_client, _target(pod, 2))
    await snapshots.wait(lambda: snapshots.count("team-a", "llama") >= 1, timeout=5)
    await asyncio.sleep(0.3)  # nothing else comes after it

    published = snapshots.by_va[("team-a", "llama")]
    assert all(isinstance(s, messages.MetricsSnapshot) for s in published)
    assert [(s.deployment_generation, s.template_hash) for s in published] == [(2, "hash-2")]  # type: ignore[union-attr]
    assert [r.pod for r in published[0].replicas] == ["llama-2"]  # type: ignore[union-attr]
    assert not handle.task.done()
