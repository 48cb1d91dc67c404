"""Pod membership decides what counts, and the two backends agree on the same pods.

Against a real Prometheus scraping emulated vLLM pods (and a real nats-server for the service test).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client

from services.fetcher.prometheus import PrometheusCollector
from services.fetcher.scrape import ScrapeCollector
from services.fetcher.settings import FetcherSettings
from shared import messages
from tests.fixtures.fetcher import ModelClock, Pods, RunFetcher, make_target
from tests.fixtures.servers import NatsServer, PrometheusServer
from tests.integration.fetcher.helpers import Snapshots, publish_targets


async def test_a_pod_removed_from_its_target_stops_contributing_while_prometheus_keeps_its_series(
    nats_server: NatsServer, nats_client: Client, prometheus_server: PrometheusServer, vllm_pods: Pods,
    run_fetcher: RunFetcher,
) -> None:
    kept = await vllm_pods.start("team-a", "llama-0")
    leaving = await vllm_pods.start("team-a", "llama-1")
    vllm_pods.traffic(leaving)  # only the pod that will leave has traffic: its rates are visible
    prometheus_server.write_targets(vllm_pods.file_sd())
    await prometheus_server.wait_for('rate(vllm:request_success_total{pod="llama-1"}[1m]) > 0', timeout=20)
    await prometheus_server.wait_for('rate(vllm:request_success_total{pod="llama-0"}[1m])')  # idle: rate 0
    await publish_targets(nats_client, make_target("team-a", "llama", [kept, leaving]))
    snapshots = Snapshots()
    await snapshots.attach(nats_client)
    handle = await run_fetcher(
        nats_url=nats_server.url, prometheus_url=prometheus_server.url, fetch_interval=0.5, cache_ttl=30.0
    )
    await handle.wait_ready()

    def last() -> messages.MetricsSnapshot | None:
        got = snapshots.last("team-a", "llama")
        return got if isinstance(got, messages.MetricsSnapshot) else None

    await snapshots.wait(lambda: (s := last()) is not None and len(s.replicas) == 2)  # a background cycle
    before = last()
    assert before is not None and before.status == "ok", before
    assert [r.pod for r in before.replicas] == ["llama-0", "llama-1"]
    assert before.allocation.arrival_rate is not None and before.allocation.arrival_rate > 0

    # The pod is deleted: the watcher publishes the target without it. Prometheus still holds its
    # series (here it even keeps scraping it: the harshest case).
    await publish_targets(nats_client, make_target("team-a", "llama", [kept]))
    await snapshots.wait(lambda: (s := last()) is not None and len(s.replicas) == 1)  # the next cycle (batched)
    assert await prometheus_server.query('rate(vllm:request_success_total{pod="llama-1"}[1m]) > 0')
    after = last()
    assert after is not None and after.status == "ok", after.reason
    assert [r.pod for r in after.replicas] == ["llama-0"]
    assert after.allocation.arrival_rate == 0.0  # the leaving pod's traffic no longer counts

    # The on-demand path (a targeted query) excludes it as well.
    fresh = messages.encode(
        messages.FetchRequest(namespace="team-a", name="llama", at=messages.utcnow(), fresh=True)
    )
    reply = messages.metrics_decoder.decode(
        (await nats_client.request("wva.fetch.team-a.llama", fresh, timeout=5)).data
    )
    assert isinstance(reply, messages.MetricsSnapshot) and reply.collected_at > after.collected_at
    assert [r.pod for r in reply.replicas] == ["llama-0"] and reply.allocation.arrival_rate == 0.0


WINDOW = 5.0  # seconds; rate() over [5s] with Prometheus scraping every second


def _gauges(r: messages.ReplicaMetrics) -> tuple[object, ...]:
    return (r.pod, r.kv_cache_usage, r.waiting, r.running, r.num_gpu_blocks, r.block_size)


async def test_scrape_backend_gives_the_same_per_replica_values_as_prometheus(
    prometheus_server: PrometheusServer, vllm_pods: Pods
) -> None:
    clock = ModelClock()
    busy = await vllm_pods.start("team-a", "busy-0", clock=clock)
    calm = await vllm_pods.start("team-a", "calm-0", clock=clock)
    vllm_pods.traffic(busy, per_second=25.0)
    vllm_pods.traffic(calm, per_second=8.0)
    prometheus_server.write_targets(vllm_pods.file_sd())
    # One pod per VA, so each VA's allocation figures are that replica's.
    targets = [make_target("team-a", "busy", [busy]), make_target("team-a", "calm", [calm])]
    prom = PrometheusCollector(FetcherSettings(prometheus_url=prometheus_server.url, rate_window=WINDOW))
    scrape = ScrapeCollector(FetcherSettings(collector="scrape", rate_window=WINDOW))
    loop = asyncio.get_running_loop()
    try:
        await prometheus_server.wait_for('vllm:kv_cache_usage_perc{pod="calm-0"}', timeout=20)
        # Scrape directly every second for more than a window, so both backends' windows are full.
        started = loop.time()
        while loop.time() - started < WINDOW + 1.5:
            await scrape.collect(targets)
            await asyncio.sleep(1.0)
        by_prom, by_scrape = await asyncio.gather(prom.collect(targets), scrape.collect(targets))

        # Rates: the same traffic seen through windows that end up to one scrape interval apart.
        for t in targets:
            p = by_prom.snapshots[(t.namespace, t.name)]  # type: ignore[index]
            s = by_scrape.snapshots[(t.namespace, t.name)]  # type: ignore[index]
            assert p.status == s.status == "ok", (p.reason, s.reason)
            pa, sa = p.allocation, s.allocation
            assert pa.arrival_rate is not None and pa.arrival_rate > 5
            assert sa.arrival_rate == pytest.approx(pa.arrival_rate, rel=0.25), t.name
            assert sa.avg_input_tokens == pytest.approx(pa.avg_input_tokens, rel=0.25), t.name
            assert sa.avg_output_tokens == pytest.approx(pa.avg_output_tokens, rel=0.25), t.name
            assert sa.ttft_seconds == pytest.approx(pa.ttft_seconds, rel=0.5), t.name
            assert sa.itl_seconds == pytest.approx(pa.itl_seconds, rel=0.5), t.name
            # Each pod's own rates too (the SLO analyzer's points).
            for pr, sr in zip(p.replicas, s.replicas, strict=True):
                assert sr.generation_tokens_rate == pytest.approx(pr.generation_tokens_rate, rel=0.25), t.name
                assert sr.itl_seconds == pytest.approx(pr.itl_seconds, rel=0.5), t.name

        # Gauges: freeze the pods with requests queued and running, let Prometheus scrape them again,
        # and both backends must read exactly the same per-replica values.
        vllm_pods.stop_traffic()
        busy.send(60)  # more than max_num_seqs (32): some wait
        clock.freeze()
        frozen = time.time()
        await prometheus_server.wait_for(f"timestamp(vllm:kv_cache_usage_perc) > {frozen:.3f}", min_series=2)
        by_prom, by_scrape = await asyncio.gather(prom.collect(targets), scrape.collect(targets))
        for t in targets:
            p = by_prom.snapshots[(t.namespace, t.name)]  # type: ignore[index]
            s = by_scrape.snapshots[(t.namespace, t.name)]  # type: ignore[index]
            # Pod, KV usage, waiting, running, blocks: all equal (the per-pod rates are compared above).
            assert [_gauges(r) for r in p.replicas] == [_gauges(r) for r in s.replicas], t.name
        frozen_busy = by_prom.snapshots[("team-a", "busy")].replicas[0]  # type: ignore[index]
        assert frozen_busy.waiting and frozen_busy.running and frozen_busy.kv_cache_usage  # not a 0 == 0 test
    finally:
        await prom.aclose()
        await scrape.aclose()


def _gauges(r: messages.ReplicaMetrics) -> tuple[object, ...]:
    return (r.pod, r.kv_cache_usage, r.waiting, r.running, r.num_gpu_blocks, r.block_size)
