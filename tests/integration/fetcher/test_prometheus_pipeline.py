"""The fetcher against a real Prometheus scraping emulated vLLM pods, and a real nats-server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest
from nats.aio.client import Client
from prometheus_client import REGISTRY

from services.fetcher import cache as caching
from services.fetcher.fetching import Fetcher
from services.fetcher.prometheus import PrometheusCollector
from services.fetcher.settings import FetcherSettings
from services.fetcher.tracking import Tracker
from shared import messages
from tests.fixtures.fetcher import Pods, RunFetcher, make_target
from tests.fixtures.servers import NatsServer, PrometheusServer
from tests.integration.fetcher.helpers import Snapshots, prometheus_queries_served, publish_targets

POD_QUERIES = 12  # one per metric, see promql.queries()
QUERIES_PER_COLLECTION = POD_QUERIES + 1  # and one for the gateway's queue (every model at once)


async def _cluster(prom: PrometheusServer, pods: Pods) -> dict[str, messages.Target]:
    """Two variants of one model in team-a, one in team-b, and a stray pod no VA owns any more."""
    a1 = await pods.start("team-a", "llama-l4-0")
    a2 = await pods.start("team-a", "llama-a100-0")
    await pods.start("team-a", "llama-l4-old")  # deleted from the Deployment, still scraped
    b1 = await pods.start("team-b", "llama-0")
    pods.traffic(a1)
    pods.traffic(pods.pods[2])  # the stray pod has traffic that must not be counted
    prom.write_targets(pods.file_sd())
    await prom.wait_for("rate(vllm:request_success_total[1m])", min_series=4)
    await prom.wait_for('rate(vllm:request_success_total{pod="llama-l4-0"}[1m]) > 0', timeout=20)
    await prom.wait_for('rate(vllm:time_to_first_token_seconds_count{pod="llama-l4-0"}[1m]) > 0', timeout=20)
    return {
        "l4": make_target("team-a", "llama-l4", [a1]),
        "a100": make_target("team-a", "llama.a100", [a2]),  # a dotted name: subject token llama_a100
        "b": make_target("team-b", "llama", [b1]),
    }


async def test_background_cycle_publishes_one_snapshot_per_va_from_batched_queries(
    nats_server: NatsServer, nats_client: Client, prometheus_server: PrometheusServer, vllm_pods: Pods,
    run_fetcher: RunFetcher, caplog: pytest.LogCaptureFixture,
) -> None:
    targets = await _cluster(prometheus_server, vllm_pods)
    await publish_targets(nats_client, *targets.values())
    snapshots = Snapshots()
    await snapshots.attach(nats_client)
    caplog.set_level("INFO", logger="wva.fetcher")

    handle = await run_fetcher(
        nats_url=nats_server.url, prometheus_url=prometheus_server.url, fetch_interval=1.0, cache_ttl=30.0
    )
    await handle.wait_ready()
    await snapshots.wait(lambda: all(snapshots.last(t.namespace, t.name) for t in targets.values()))

    l4 = snapshots.last("team-a", "llama-l4")
    assert isinstance(l4, messages.MetricsSnapshot)
    assert l4.status == "ok", l4.reason
    assert [r.pod for r in l4.replicas] == ["llama-l4-0"]  # the stray pod of the same model is dropped
    replica = l4.replicas[0]
    assert replica.kv_cache_usage is not None and 0.0 <= replica.kv_cache_usage <= 1.0
    assert replica.num_gpu_blocks == 1024 and replica.block_size == 16
    alloc = l4.allocation
    assert alloc.arrival_rate is not None and alloc.arrival_rate > 0
    # Every request is 200 in / 20 out. Tokens are counted as they are processed and requests when they
    # finish, so requests in flight at the window's edges blur the ratio a little.
    assert alloc.avg_input_tokens == pytest.approx(200.0, rel=0.2)
    assert alloc.avg_output_tokens == pytest.approx(20.0, rel=0.2)
    assert alloc.ttft_seconds is not None and alloc.ttft_seconds > 0
    assert alloc.itl_seconds is not None and alloc.itl_seconds > 0
    assert l4.model_id == targets["l4"].model_id and l4.deployment_generation == 1
    assert alloc.gateway_queue is None  # no gateway reports a queue: unknown, not 0

    a100 = snapshots.last("team-a", "llama.a100")
    assert isinstance(a100, messages.MetricsSnapshot)
    assert [r.pod for r in a100.replicas] == ["llama-a100-0"]
    assert a100.allocation.arrival_rate == 0.0  # idle, but reported: not "missing"
    b = snapshots.last("team-b", "llama")
    assert isinstance(b, messages.MetricsSnapshot) and [r.pod for r in b.replicas] == ["llama-0"]

    def summary() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("Background fetch completed for 3 VAs in ")]

    async with asyncio.timeout(5):
        while not summary():
            await asyncio.sleep(0.05)
    lines = summary()
    assert lines[0].queries == QUERIES_PER_COLLECTION  # type: ignore[attr-defined]
    assert lines[0].ok == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["batched", "per-va"])
async def test_queries_per_cycle_do_not_grow_with_vas_when_batched(
    prometheus_server: PrometheusServer, vllm_pods: Pods, mode: str
) -> None:
    """The fetcher's core with the real Prometheus backend; what Prometheus itself served is counted."""
    pod = await vllm_pods.start("ns-0", "shared-0")
    prometheus_server.write_targets(vllm_pods.file_sd())
    await prometheus_server.wait_for("rate(vllm:request_success_total[1m])")

    async def publish(batch: Sequence[messages.MetricsSnapshot]) -> list[Exception | None]:
        return [None] * len(batch)

    settings = FetcherSettings(prometheus_url=prometheus_server.url, query_mode=mode)
    fetcher = Fetcher(
        collector=PrometheusCollector(settings), cache=caching.MemoryCache(30), tracker=Tracker(), publish=publish
    )
    counts = {}
    try:
        # Batched: the 10 and 200 VAs. Per-VA sends 12 queries per VA, so 10 and 20 show the growth.
        sizes = (10, 200) if mode == "batched" else (10, 20)
        for n in sizes:
            # n VAs over 4 namespaces; one of them owns the real pod, the others list pods that do not exist.
            for i in range(n):
                fetcher.track(make_target(f"ns-{i % 4}", f"va-{i}", [pod] if i == 0 else [f"gone-{i}"]))
            before = await prometheus_queries_served(prometheus_server)
            report = await fetcher.cycle()
            served = await prometheus_queries_served(prometheus_server) - before
            assert report.vas == n and served == report.queries
            counts[n] = report.queries
            assert report.partial == n - 1 and report.ok == 1
    finally:
        await fetcher.aclose()
    if mode == "batched":
        assert counts == {10: QUERIES_PER_COLLECTION, 200: QUERIES_PER_COLLECTION}
    else:  # proportional to the VAs
        assert counts == {10: 10 * POD_QUERIES + 1, 20: 20 * POD_QUERIES + 1}


async def test_on_demand_fetch_uses_cache_then_shares_one_query_between_concurrent_misses(
    nats_server: NatsServer, nats_client: Client, prometheus_server: PrometheusServer, vllm_pods: Pods,
    run_fetcher: RunFetcher, caplog: pytest.LogCaptureFixture,
) -> None:
    pod = await vllm_pods.start("team-a", "llama-0")
    prometheus_server.write_targets(vllm_pods.file_sd())
    await prometheus_server.wait_for("vllm:kv_cache_usage_perc")
    target = make_target("team-a", "llama", [pod])
    await publish_targets(nats_client, target)
    snapshots = Snapshots()
    await snapshots.attach(nats_client)
    caplog.set_level("INFO", logger="wva.fetcher")
    handle = await run_fetcher(nats_url=nats_server.url, prometheus_url=prometheus_server.url)
    await handle.wait_ready()
    subject = "wva.fetch.team-a.llama"
    request = messages.encode(messages.FetchRequest(namespace="team-a", name="llama", at=messages.utcnow()))

    async def served() -> int:  # queries Prometheus answered since the fetcher started
        return await prometheus_queries_served(prometheus_server) - start

    start = await prometheus_queries_served(prometheus_server)
    # Five concurrent misses: one targeted collection, one published snapshot.
    replies = await asyncio.gather(*(nats_client.request(subject, request, timeout=5) for _ in range(5)))
    decoded = [messages.metrics_decoder.decode(r.data) for r in replies]
    assert {d.collected_at for d in decoded if isinstance(d, messages.MetricsSnapshot)} == {decoded[0].collected_at}
    assert await served() == QUERIES_PER_COLLECTION
    await snapshots.wait(lambda: snapshots.count("team-a", "llama") == 1)

    # Fresh in cache: answered without a query (an empty body is a plain request too).
    reply = await nats_client.request(subject, b"", timeout=5)
    cached = messages.metrics_decoder.decode(reply.data)
    assert isinstance(cached, messages.MetricsSnapshot) and cached.collected_at == decoded[0].collected_at
    assert await served() == QUERIES_PER_COLLECTION
    assert any(r.getMessage() == "Using cached allocation metrics" for r in caplog.records)
    assert any(r.getMessage().startswith("Cache miss for allocation metrics") for r in caplog.records)

    # fresh=true bypasses the cache.
    fresh = messages.encode(
        messages.FetchRequest(namespace="team-a", name="llama", at=messages.utcnow(), fresh=True)
    )
    again = messages.metrics_decoder.decode((await nats_client.request(subject, fresh, timeout=5)).data)
    assert isinstance(again, messages.MetricsSnapshot) and again.collected_at > decoded[0].collected_at
    assert await served() == 2 * QUERIES_PER_COLLECTION

    # Unknown VA and a malformed body: an answer that says why, never silence.
    unknown = messages.metrics_decoder.decode((await nats_client.request("wva.fetch.team-a.nope", b"", timeout=5)).data)
    assert isinstance(unknown, messages.MetricsSnapshot) and unknown.status == "unavailable"
    assert "not tracked" in unknown.reason
    bad = messages.metrics_decoder.decode((await nats_client.request(subject, b"{not json", timeout=5)).data)
    assert isinstance(bad, messages.MetricsSnapshot) and bad.status == "unavailable"
    assert "malformed" in bad.reason


async def test_invalidation_drops_cache_and_publishes_a_fresh_snapshot_promptly(
    nats_server: NatsServer, nats_client: Client, prometheus_server: PrometheusServer, vllm_pods: Pods,
    run_fetcher: RunFetcher,
) -> None:
    old = await vllm_pods.start("team-a", "llama-old")
    new = await vllm_pods.start("team-a", "llama-new")
    prometheus_server.write_targets(vllm_pods.file_sd())
    await prometheus_server.wait_for("vllm:kv_cache_usage_perc", min_series=2)
    await publish_targets(nats_client, make_target("team-a", "llama", [old]))
    snapshots = Snapshots()
    await snapshots.attach(nats_client)
    handle = await run_fetcher(nats_url=nats_server.url, prometheus_url=prometheus_server.url)
    await handle.wait_ready()
    first = messages.metrics_decoder.decode((await nats_client.request("wva.fetch.team-a.llama", b"", timeout=5)).data)
    assert isinstance(first, messages.MetricsSnapshot) and [r.pod for r in first.replicas] == ["llama-old"]

    # A rollout: the watcher publishes the new target, then the invalidation.
    await publish_targets(nats_client, make_target("team-a", "llama", [new], generation=2))
    js = nats_client.jetstream()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await js.publish(
        "wva.invalidate.team-a.llama",
        messages.encode(
            messages.Invalidation(
                namespace="team-a", name="llama", at=messages.utcnow(), reason="template_changed",
                deployment_generation=2,
            )
        ),
    )
    await snapshots.wait(lambda: snapshots.count("team-a", "llama") >= 2, timeout=5)
    # Promptly, with background fetching off: measured 0.045-0.065 s from publishing the invalidation
    # (20 ms debounce plus one targeted collection); the issue asks for "within about a second".
    assert loop.time() - t0 < 1.0
    fresh = snapshots.last("team-a", "llama")
    assert isinstance(fresh, messages.MetricsSnapshot)
    assert [r.pod for r in fresh.replicas] == ["llama-new"] and fresh.deployment_generation == 2
    # The cached entry was replaced: an on-demand request now gets the post-rollout data.
    reply = messages.metrics_decoder.decode((await nats_client.request("wva.fetch.team-a.llama", b"", timeout=5)).data)
    assert isinstance(reply, messages.MetricsSnapshot) and reply.collected_at == fresh.collected_at


async def test_deleted_va_is_tombstoned_and_no_longer_tracked(
    nats_server: NatsServer, nats_client: Client, prometheus_server: PrometheusServer, vllm_pods: Pods,
    run_fetcher: RunFetcher,
) -> None:
    pod = await vllm_pods.start("team-a", "llama-0")
    await publish_targets(nats_client, make_target("team-a", "llama", [pod]))
    snapshots = Snapshots()
    await snapshots.attach(nats_client)
    handle = await run_fetcher(nats_url=nats_server.url, prometheus_url=prometheus_server.url)
    await handle.wait_ready()

    async def ask() -> messages.MetricsMessage:
        return messages.metrics_decoder.decode((await nats_client.request("wva.fetch.team-a.llama", b"", timeout=5)).data)

    tracked = await ask()
    assert isinstance(tracked, messages.MetricsSnapshot) and "not tracked" not in tracked.reason
    js = nats_client.jetstream()

    def rejected(kind: str) -> float:
        return sum(
            s.value for m in REGISTRY.collect() if m.name == "wva_messages_rejected"
            for s in m.samples if s.name.endswith("_total") and s.labels.get("subject_kind") == kind
        )

    before = {k: rejected(k) for k in ("targets", "invalidate")}
    await js.publish("wva.targets.team-a.llama", b"\x00 garbage")  # counted and skipped
    await js.publish("wva.invalidate.team-a.llama", b"{not an invalidation")  # counted and skipped
    await js.publish(
        "wva.targets.team-a.llama",
        messages.encode(messages.TargetDeleted(namespace="team-a", name="llama", at=messages.utcnow())),
    )
    await snapshots.wait(lambda: isinstance(snapshots.last("team-a", "llama"), messages.MetricsDeleted))
    reply = await ask()
    assert isinstance(reply, messages.MetricsSnapshot) and reply.status == "unavailable"
    assert "not tracked" in reply.reason
    assert not handle.task.done()  # the garbage did not stop the consumers
    async with asyncio.timeout(5):
        while any(rejected(k) - before[k] < 1 for k in before):
            await asyncio.sleep(0.02)


async def test_prometheus_outage_gives_unavailable_snapshots_then_recovers(
    nats_server: NatsServer, nats_client: Client, prometheus_server: PrometheusServer, vllm_pods: Pods,
    run_fetcher: RunFetcher, caplog: pytest.LogCaptureFixture,
) -> None:
    pod = await vllm_pods.start("team-a", "llama-0")
    prometheus_server.write_targets(vllm_pods.file_sd())
    await prometheus_server.wait_for("vllm:kv_cache_usage_perc")
    await publish_targets(nats_client, make_target("team-a", "llama", [pod]))
    snapshots = Snapshots()
    await snapshots.attach(nats_client)
    caplog.set_level("INFO", logger="wva.fetcher")
    handle = await run_fetcher(
        nats_url=nats_server.url, prometheus_url=prometheus_server.url, fetch_interval=1.0, cache_ttl=30.0,
        fetch_budget=0.8, prometheus_timeout=0.5,
    )
    await handle.wait_ready()
    await snapshots.wait(lambda: getattr(snapshots.last("team-a", "llama"), "status", None) == "ok")

    prometheus_server.stop()
    await snapshots.wait(lambda: getattr(snapshots.last("team-a", "llama"), "status", None) == "unavailable")
    down = snapshots.last("team-a", "llama")
    assert isinstance(down, messages.MetricsSnapshot)
    # Refused, or timed out in flight: either way a short reason, without the URL or a library's text.
    assert down.reason in ("Prometheus unreachable", "Prometheus query timed out after 0.5s"), down.reason

    # Retries happened (more requests than queries) and stayed within the cycle's budget.
    def failed_cycles() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records
            if r.getMessage().startswith("Background fetch completed") and getattr(r, "unavailable", 0) == 1
        ]

    async with asyncio.timeout(5):
        while not failed_cycles():
            await asyncio.sleep(0.05)
    line = failed_cycles()[0]
    assert line.queries > QUERIES_PER_COLLECTION  # type: ignore[attr-defined]
    assert int(line.getMessage().split(" in ")[1].split()[0]) < 1500  # "… for 1 VAs in N ms"

    prometheus_server.start()
    await snapshots.wait(lambda: getattr(snapshots.last("team-a", "llama"), "status", None) == "ok", timeout=15)
    assert not handle.task.done()
