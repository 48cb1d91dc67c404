"""A real Prometheus scrapes the emulated pods through the cluster's file_sd output, and what it stores
is what the emulator's replicas hold."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.sandbox.cluster import Cluster
from services.sandbox.router import PodKey
from tests.fixtures.sandbox import ClusterFactory
from tests.fixtures.servers import PrometheusServer

pytestmark = pytest.mark.slow

# Two variants; the "slow" one's iterations take 1000 s, so whatever it holds stays put while scraped.
SCENARIO = """
name: scrape
duration: 10
namespaces: [llm]
models:
  - id: org/model-7b
    namespace: llm
    variants:
      - {name: quick, cost: "40", accelerator: L40S, max_replicas: 2, initial_replicas: 1, startup_seconds: 0}
      - name: slow
        cost: "80"
        accelerator: H100
        max_replicas: 2
        initial_replicas: 1
        startup_seconds: 0
        server: {decode_base_seconds: 1000, kv_cache_tokens: 8192}
"""


async def values(prometheus: PrometheusServer, promql: str) -> dict[str, float]:
    return {r["metric"]["pod"]: float(r["value"][1]) for r in await prometheus.query(promql)}


async def test_prometheus_sees_what_the_replicas_hold(
    sandbox_cluster: ClusterFactory, prometheus_server: PrometheusServer
) -> None:
    cluster: Cluster = await sandbox_cluster(
        SCENARIO, no_load=True, prometheus_sd_out=prometheus_server.sd_path
    )
    (quick,) = cluster.ready_pods("quick")
    (slow,) = cluster.ready_pods("slow")
    servers = cluster.runtime.servers()
    for _ in range(5):
        assert servers[quick].submit(input_tokens=100, output_tokens=10)
    for _ in range(3):
        assert servers[slow].submit(input_tokens=1000, output_tokens=200)  # 75 of 512 blocks each

    document = json.loads(prometheus_server.sd_path.read_text())
    assert sorted((g["labels"]["namespace"], g["labels"]["pod"]) for g in document) == sorted(
        tuple(k.split("/")) for k in (quick, slow)
    )

    # PromQL comparisons filter: these return a series only once the value is there
    await prometheus_server.wait_for(f'vllm:request_success_total{{pod="{pod_name(quick)}"}} == 5')
    await prometheus_server.wait_for(f'vllm:num_requests_waiting{{pod="{pod_name(slow)}"}} == 2')

    quick_replica, slow_replica = servers[quick].replica, servers[slow].replica
    for replica in (quick_replica, slow_replica):
        replica.advance(servers[quick].now())
    expected: dict[str, dict[str, float]] = {
        # the slow replica's first iteration took the first request alone and lasts 1000 s
        "vllm:num_requests_running": {"quick": 0, "slow": 1},
        "vllm:num_requests_waiting": {"quick": 0, "slow": 2},
        "vllm:kv_cache_usage_perc": {"quick": 0, "slow": 75 / 512},
        "vllm:request_success_total": {"quick": 5, "slow": 0},
        "vllm:prompt_tokens_total": {"quick": 500, "slow": 0},  # counted when prefilled, as vLLM does
        "vllm:generation_tokens_total": {"quick": 50, "slow": 0},
        "vllm:e2e_request_latency_seconds_count": {"quick": 5, "slow": 0},
        "vllm:time_to_first_token_seconds_count": {"quick": 5, "slow": 0},
    }
    names = {"quick": pod_name(quick), "slow": pod_name(slow)}
    for metric, per_variant in expected.items():
        got = await values(prometheus_server, metric)
        assert got == {names[v]: pytest.approx(x) for v, x in per_variant.items()}, metric
    # ...and those are the emulator's own numbers
    assert quick_replica.stats.requests_succeeded == 5
    assert (slow_replica.num_running, slow_replica.num_waiting) == (1, 2)
    assert slow_replica.kv_cache_usage == pytest.approx(75 / 512)
    e2e_sum = await values(prometheus_server, "vllm:e2e_request_latency_seconds_sum")
    assert e2e_sum[names["quick"]] == pytest.approx(quick_replica.stats.e2e.sum)

    # labels come from the scrape config (namespace, pod) and the server (model_name), as in a cluster
    (series,) = await prometheus_server.query(f'vllm:num_requests_running{{pod="{names["slow"]}"}}')
    labels: dict[str, Any] = series["metric"]
    assert (labels["namespace"], labels["model_name"], labels["job"]) == ("llm", "org/model-7b", "vllm")
    (info,) = await prometheus_server.query(f'vllm:cache_config_info{{pod="{names["slow"]}"}}')
    assert (info["metric"]["num_gpu_blocks"], info["metric"]["block_size"]) == ("512", "16")


def pod_name(key: PodKey) -> str:
    return key.split("/", 1)[1]
