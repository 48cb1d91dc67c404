"""The scrape backend end to end, bad values from a pod, and fetcher replicas sharing requests."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from shared import messages
from tests.fixtures.fetcher import Pods, RunFetcher, StaticServer, make_target
from tests.fixtures.servers import NatsServer
from tests.fixtures.services import StartService, metric_sum
from tests.integration.fetcher.helpers import Snapshots, publish_targets

NAN_POD = """\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} NaN
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} -1.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 2.0
# TYPE vllm:request_success counter
vllm:request_success_total{model_name="m"} 5.0
"""


async def test_scrape_backend_reads_pods_directly_and_drops_bad_values(
    nats_server: NatsServer, nats_client: Client, vllm_pods: Pods, static_metrics: StaticServer,
    run_fetcher: RunFetcher,
) -> None:
    pod = await vllm_pods.start("team-a", "llama-0")
    vllm_pods.traffic(pod)
    broken = await static_metrics(NAN_POD)
    target = make_target("team-a", "llama", [pod])
    odd = messages.Target(
        namespace="team-a", name="odd", at=messages.utcnow(), model_id="m",
        pods=(messages.PodRef(name="odd-0", ready=True, address=broken),),
    )
    await publish_targets(nats_client, target, odd)
    snapshots = Snapshots()
    await snapshots.attach(nats_client)
    handle = await run_fetcher(
        nats_url=nats_server.url, collector="scrape", fetch_interval=0.5, cache_ttl=30.0, rate_window=5.0
    )
    await handle.wait_ready()

    # First scrape: gauges but no rates yet -> partial; the next one has rates -> ok.
    def status(name: str) -> str | None:
        return getattr(snapshots.last("team-a", name), "status", None)

    await snapshots.wait(lambda: status("llama") == "ok")
    first = snapshots.by_va[("team-a", "llama")][0]
    assert isinstance(first, messages.MetricsSnapshot) and first.status == "partial"
    assert "first scrape" in first.reason
    ok = snapshots.last("team-a", "llama")
    assert isinstance(ok, messages.MetricsSnapshot)
    assert ok.allocation.arrival_rate is not None and ok.allocation.arrival_rate > 0
    # Prompt tokens count at admission, requests at completion: over a half-second window the ratio is
    # only roughly the 200 tokens every request carries.
    assert ok.allocation.avg_input_tokens is not None and 50 < ok.allocation.avg_input_tokens < 1000
    assert ok.replicas[0].num_gpu_blocks == 1024

    bad = snapshots.last("team-a", "odd")
    assert isinstance(bad, messages.MetricsSnapshot)
    assert bad.dropped_values == 2 and bad.status == "partial"
    assert bad.replicas[0].kv_cache_usage is None and bad.replicas[0].waiting is None
    assert bad.replicas[0].running == 2.0


async def test_fetcher_replicas_share_requests_through_the_queue_group(
    nats_server: NatsServer, nats_client: Client, vllm_pods: Pods, wva_process: StartService
) -> None:
    """Two `wva fetcher` processes: each request is answered once, both took some, nobody did it twice."""
    pods = [await vllm_pods.start("team-a", f"llama-{i}") for i in range(2)]
    targets = [make_target("team-a", f"va-{i}", [pods[i % 2]]) for i in range(20)]
    await publish_targets(nats_client, *targets)
    env = {"WVA_NATS_URL": nats_server.url, "WVA_COLLECTOR": "scrape", "WVA_FETCH_INTERVAL": "0"}
    replicas = [await wva_process("fetcher", env) for _ in range(2)]
    # One reply per request (a plain subscription would give two), and both replicas took some.
    inbox = nats_client.new_inbox()
    replies: list[object] = []

    async def on_reply(msg: object) -> None:
        replies.append(msg)

    sub = await nats_client.subscribe(inbox, cb=on_reply)
    for t in targets:
        await nats_client.publish(f"wva.fetch.team-a.{t.name}", b"", reply=inbox)
    async with asyncio.timeout(10):
        while len(replies) < len(targets):
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    await sub.unsubscribe()
    assert len(replies) == len(targets)
    answered = [metric_sum(await r.metrics(), "wva_fetcher_fetch_requests_total") for r in replicas]
    scrapes = [
        metric_sum(await r.metrics(), "wva_fetcher_queries_total", backend="scrape") for r in replicas
    ]
    assert all(n > 0 for n in answered), answered
    assert sum(answered) == len(targets)
    assert sum(scrapes) == len(targets)  # one scrape per request: nobody did the work twice
