"""The gateway's queue per model, read by both backends from the sandbox's router (the emulated
inference gateway): through a real Prometheus scraping it, and scraped directly. Every snapshot of a
model carries its queue — a model at zero (no pods) too, on the background cycle and on demand; a
model the gateway has nothing waiting for gets 0."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from nats.aio.client import Client

from shared import messages
from tests.fixtures.fetcher import Gateway, Pods, RunFetcher, make_target
from tests.fixtures.servers import NatsServer, PrometheusServer
from tests.integration.fetcher.helpers import Snapshots, publish_targets

AT_ZERO, SERVING, UNKNOWN = "org/at-zero", "org/serving", "org/unknown"


async def _targets(nc: Client, pods: Pods) -> None:
    pod = await pods.start("team-a", "serving-0", model_id=SERVING)
    await publish_targets(
        nc,
        make_target("team-a", "at-zero", [], model_id=AT_ZERO),  # no pods: the model is at zero
        make_target("team-a", "serving", [pod], model_id=SERVING),
        make_target("team-a", "unknown", [], model_id=UNKNOWN),  # a model the gateway does not list
    )


def _queue(snapshots: Snapshots, name: str) -> float | None:
    last = snapshots.last("team-a", name)
    return last.allocation.gateway_queue if isinstance(last, messages.MetricsSnapshot) else -1.0


async def _fetch_on_demand(nc: Client, name: str) -> messages.MetricsSnapshot:
    request = messages.encode(messages.FetchRequest(namespace="team-a", name=name, at=messages.utcnow(), fresh=True))
    reply = messages.metrics_decoder.decode((await nc.request(f"wva.fetch.team-a.{name}", request, timeout=5)).data)
    assert isinstance(reply, messages.MetricsSnapshot)
    return reply


async def _story(nc: Client, gateway: Gateway, snapshots: Snapshots) -> None:
    """3 requests wait for the model at zero; then 2 more; each cycle's snapshots follow."""
    await snapshots.wait(lambda: _queue(snapshots, "at-zero") == 3.0, timeout=15)
    assert _queue(snapshots, "serving") == 0.0  # a gateway is there; nothing of this model waits
    assert _queue(snapshots, "unknown") == 0.0
    serving = snapshots.last("team-a", "serving")
    assert isinstance(serving, messages.MetricsSnapshot) and [r.pod for r in serving.replicas] == ["serving-0"]
    at_zero = snapshots.last("team-a", "at-zero")
    assert isinstance(at_zero, messages.MetricsSnapshot) and at_zero.status == "ok" and at_zero.replicas == ()
    gateway.queue(AT_ZERO, 2)
    await snapshots.wait(lambda: _queue(snapshots, "at-zero") == 5.0, timeout=15)
    assert (await _fetch_on_demand(nc, "at-zero")).allocation.gateway_queue == 5.0  # a targeted fetch too


async def test_prometheus_backend_reads_the_queue_in_one_query_per_collection(
    nats_server: NatsServer, nats_client: Client, prometheus_server: PrometheusServer, vllm_pods: Pods,
    sandbox_gateway: Gateway, run_fetcher: RunFetcher, caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox_gateway.router.add_model(SERVING)
    sandbox_gateway.queue(AT_ZERO, 3)
    await _targets(nats_client, vllm_pods)
    gateway_target: list[dict[str, Any]] = [{"targets": [sandbox_gateway.address], "labels": {}}]
    prometheus_server.write_targets(vllm_pods.file_sd() + gateway_target)
    await prometheus_server.wait_for(f'inference_extension_flow_control_queue_size{{target_model_name="{AT_ZERO}"}} == 3')
    await prometheus_server.wait_for("vllm:kv_cache_usage_perc")
    snapshots = Snapshots()
    await snapshots.attach(nats_client)
    caplog.set_level("INFO", logger="wva.fetcher")
    handle = await run_fetcher(
        nats_url=nats_server.url, prometheus_url=prometheus_server.url, fetch_interval=0.5, cache_ttl=30.0
    )
    await handle.wait_ready()
    await _story(nats_client, sandbox_gateway, snapshots)
    cycles = [r for r in caplog.records if r.getMessage().startswith("Background fetch completed for 3 VAs")]
    # The pods' 12 queries, plus one for the gateway: the same with one VA or thousands.
    assert cycles and {r.queries for r in cycles} == {13}  # type: ignore[attr-defined]


async def test_scrape_backend_reads_the_gateways_metrics_url_once_per_collection(
    nats_server: NatsServer, nats_client: Client, vllm_pods: Pods, sandbox_gateway: Gateway,
    run_fetcher: RunFetcher, caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox_gateway.router.add_model(SERVING)
    sandbox_gateway.queue(AT_ZERO, 3)
    await _targets(nats_client, vllm_pods)
    snapshots = Snapshots()
    await snapshots.attach(nats_client)
    caplog.set_level(logging.INFO, logger="wva.fetcher")
    handle = await run_fetcher(
        nats_url=nats_server.url, collector="scrape", gateway_metrics_url=sandbox_gateway.url,
        fetch_interval=0.5, cache_ttl=30.0, rate_window=5.0,
    )
    await handle.wait_ready()
    await _story(nats_client, sandbox_gateway, snapshots)
    cycles = [r for r in caplog.records if r.getMessage().startswith("Background fetch completed for 3 VAs")]
    assert cycles and {r.queries for r in cycles} == {2}  # type: ignore[attr-defined]  # the pod and the gateway
