"""The emulated cluster: objects as a user would apply them, load only to ready pods, scale-down
through the API's scale subresource takes a pod out of routing and out of Prometheus' targets, and a
model at zero waits at the gateway (exported on its /metrics) until its first replica is ready."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from services.sandbox.cluster import Cluster, wait_until
from tests.fixtures.cluster import api_client_for
from tests.fixtures.sandbox import ClusterFactory


def sd_pods(path: Path) -> list[str]:
    return sorted(group["labels"]["pod"] for group in json.loads(path.read_text()))


async def test_scenario_objects_are_served_by_the_api(small_cluster: Cluster) -> None:
    assert small_cluster.kubeconfig_out is not None
    api = await api_client_for(small_cluster.kubeconfig_out)
    try:
        deployment = await client.AppsV1Api(api).read_namespaced_deployment("small-cheap", "llm")
        vas = await client.CustomObjectsApi(api).list_namespaced_custom_object(
            "llmd.ai", "v1alpha1", "llm", "variantautoscalings"
        )
    finally:
        await api.close()
    container = deployment.spec.template.spec.containers[0]
    assert [p.container_port for p in container.ports] == [8000]
    assert deployment.status.ready_replicas == 1
    by_name = {va["metadata"]["name"]: va for va in vas["items"]}
    assert set(by_name) == {"small-cheap", "small-expensive"}
    cheap = by_name["small-cheap"]
    assert cheap["metadata"]["labels"]["inference.optimization/acceleratorName"] == "L40S"
    assert cheap["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "small-cheap"},
        "modelID": "meta-llama/Llama-3.1-8B-Instruct",
        "variantCost": "40",
        "minReplicas": 1,
        "maxReplicas": 3,
    }
    assert by_name["small-expensive"]["spec"]["variantCost"] == "80"
    # every ready pod is a scrape target with its namespace and pod labels
    assert small_cluster.sd is not None
    assert sd_pods(small_cluster.sd.path) == sorted(k.split("/")[1] for k in small_cluster.ready_pods())
    assert len(small_cluster.ready_pods()) == 2


async def test_scaled_away_replica_gets_no_load_and_leaves_file_sd(
    sandbox_cluster: ClusterFactory, fast_scenario: str, tmp_path: Path
) -> None:
    sd_path = tmp_path / "targets.json"
    cluster = await sandbox_cluster(fast_scenario, prometheus_sd_out=sd_path)
    before = cluster.ready_pods("fast-cheap")
    assert len(before) == 3
    assert len(sd_pods(sd_path)) == 4  # 3 cheap + 1 expensive
    servers = cluster.runtime.servers()
    load = asyncio.create_task(cluster.run_load())
    try:
        await asyncio.sleep(0.5)
        # the router spreads over every ready replica of the model, across both variants
        assert all(servers[k].replica.stats.requests_arrived > 0 for k in servers)

        assert cluster.kubeconfig_out is not None
        api = await api_client_for(cluster.kubeconfig_out)
        try:
            await client.AppsV1Api(api).patch_namespaced_deployment_scale(
                "fast-cheap", "llm", {"spec": {"replicas": 1}}
            )
        finally:
            await api.close()
        async with asyncio.timeout(5):
            await wait_until(cluster.store_api.store, lambda: len(cluster.ready_pods("fast-cheap")) == 1)
        (survivor,) = cluster.ready_pods("fast-cheap")
        removed = [k for k in before if k != survivor]
        assert sorted(sd_pods(sd_path)) == sorted(k.split("/")[1] for k in cluster.ready_pods())
        assert not set(sd_pods(sd_path)) & {k.split("/")[1] for k in removed}
        assert all(k not in cluster.runtime.servers() for k in removed)

        arrived = {k: servers[k].replica.stats.requests_arrived for k in servers}
        await asyncio.sleep(0.5)
        for key in removed:
            assert servers[key].replica.stats.requests_arrived == arrived[key], key
            assert servers[key].port is not None
        assert servers[survivor].replica.stats.requests_arrived > arrived[survivor]
        counters = cluster.router.counters["org/model-7b"]
        assert counters.timed_out == counters.rejected == 0
    finally:
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)

    # and the removed pods' servers no longer listen
    for key in removed:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", servers[key].port)
        except OSError:
            continue
        writer.close()
        await writer.wait_closed()
        raise AssertionError(f"{key} still listens")


async def test_new_replica_gets_load_only_once_ready(
    sandbox_cluster: ClusterFactory, fast_scenario: str, tmp_path: Path
) -> None:
    spec = fast_scenario.replace(
        "initial_replicas: 3, startup_seconds: 0.2", "initial_replicas: 1, startup_seconds: 1.0"
    )
    cluster = await sandbox_cluster(spec, prometheus_sd_out=tmp_path / "targets.json")
    (first,) = cluster.ready_pods("fast-cheap")
    load = asyncio.create_task(cluster.run_load())
    try:
        cluster.store_api.store.patch("deployments", "llm", "fast-cheap", {"spec": {"replicas": 2}})
        await asyncio.sleep(0.6)  # booting: no server yet, nothing routed, not a target
        assert cluster.ready_pods("fast-cheap") == [first]
        assert len(cluster.runtime.servers()) == 2
        assert len(sd_pods(tmp_path / "targets.json")) == 2
        async with asyncio.timeout(5):
            await wait_until(cluster.store_api.store, lambda: len(cluster.ready_pods("fast-cheap")) == 2)
        (new,) = set(cluster.ready_pods("fast-cheap")) - {first}
        await asyncio.sleep(0.3)
        assert cluster.runtime.servers()[new].replica.stats.requests_arrived > 0
        assert len(sd_pods(tmp_path / "targets.json")) == 3
    finally:
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)


async def _gateway_queue(cluster: Cluster) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{cluster.gateway_address}/metrics") as resp,
    ):
        body = await resp.text()
    return {
        s.labels["target_model_name"]: s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "inference_extension_flow_control_queue_size"
    }


async def test_a_model_at_zero_queues_at_the_gateway_and_is_served_once_a_replica_is_ready(
    sandbox_cluster: ClusterFactory, fast_scenario: str
) -> None:
    spec = fast_scenario.replace("max_replicas: 4, initial_replicas: 3", "min_replicas: 0, max_replicas: 4, initial_replicas: 0")
    spec = spec.replace("max_replicas: 2, initial_replicas: 1", "min_replicas: 0, max_replicas: 2, initial_replicas: 0")
    cluster = await sandbox_cluster(spec)
    assert cluster.ready_pods() == [] and await _gateway_queue(cluster) == {"org/model-7b": 0.0}
    for _ in range(5):
        assert cluster.router.route("org/model-7b", input_tokens=100, output_tokens=10)
    assert await _gateway_queue(cluster) == {"org/model-7b": 5.0}  # what Prometheus or the fetcher reads

    cluster.store_api.store.patch("deployments", "llm", "fast-cheap", {"spec": {"replicas": 1}})
    async with asyncio.timeout(5):
        await wait_until(cluster.store_api.store, lambda: len(cluster.ready_pods("fast-cheap")) == 1)
    (pod,) = cluster.ready_pods("fast-cheap")
    counters = cluster.router.counters["org/model-7b"]
    assert (counters.queued, counters.routed, counters.timed_out) == (5, 5, 0)  # sent the moment it was ready
    assert cluster.runtime.servers()[pod].replica.stats.requests_arrived == 5
    assert await _gateway_queue(cluster) == {"org/model-7b": 0.0}


async def test_the_replicas_a_scenario_begins_with_serve_at_once_and_new_ones_boot(
    sandbox_cluster: ClusterFactory, fast_scenario: str, tmp_path: Path
) -> None:
    # A 60 s start-up (the cold-start scenario's): the first pods were running before the story began,
    # as in the decision lab, so the run does not wait a minute before its load; a pod added later boots.
    spec = fast_scenario.replace("initial_replicas: 3, startup_seconds: 0.2", "initial_replicas: 2, startup_seconds: 60")
    started = asyncio.get_running_loop().time()
    cluster = await sandbox_cluster(spec, prometheus_sd_out=tmp_path / "targets.json")  # ready within 15 s
    assert asyncio.get_running_loop().time() - started < 15
    assert len(cluster.ready_pods("fast-cheap")) == 2
    cluster.store_api.store.patch("deployments", "llm", "fast-cheap", {"spec": {"replicas": 3}})
    await asyncio.sleep(1.0)
    # The third pod exists and boots: no server, not ready (the expensive variant's one pod serves).
    assert len(cluster.ready_pods("fast-cheap")) == 2 and len(cluster.runtime.servers()) == 3
    pods, _ = cluster.store_api.store.list("pods", "llm")
    assert sum(1 for p in pods if p["metadata"]["name"].startswith("fast-cheap-")) == 3
