"""Fault injection, latency, request accounting, the admin endpoint and the bearer-token check."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from services.sandbox.kubeapi import KubeApiEmulator
from tests.fixtures.cluster import api_client_for
from tests.integration.kubeapi.objects import deployment


async def test_injected_503_then_success(kube_api: KubeApiEmulator, kube_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_client)
    await apps.create_namespaced_deployment("default", deployment("web"))
    kube_api.faults.fail(503, times=2, path=r"/deployments/web/scale$", verb="patch")
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 2}})
        assert err.value.status == 503
        assert json.loads(err.value.body)["reason"] == "ServiceUnavailable"
    assert (await apps.read_namespaced_deployment_scale("web", "default")).spec.replicas == 1, "other verbs unaffected"
    scale = await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 2}})
    assert scale.spec.replicas == 2
    assert kube_api.faults.count("patch", r"deployments/\{name\}/scale") == 3


@pytest.mark.parametrize(("status", "reason"), [(429, "TooManyRequests"), (500, "InternalError"), (409, "Conflict")])
async def test_injected_statuses_carry_kubernetes_reasons(
    kube_api: KubeApiEmulator, kube_client: client.ApiClient, status: int, reason: str
) -> None:
    kube_api.faults.fail(status, verb="list")
    core = client.CoreV1Api(kube_client)
    with pytest.raises(ApiException) as err:
        await core.list_namespaced_pod("default")
    assert err.value.status == status
    assert json.loads(err.value.body)["reason"] == reason
    if status == 429:
        assert err.value.headers["Retry-After"] == "1"
    await core.list_namespaced_pod("default")


async def test_latency_is_added_to_matching_requests(kube_api: KubeApiEmulator, kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    kube_api.faults.add_latency(0.3, verb="list", times=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await core.list_namespaced_pod("default")
    assert loop.time() - started >= 0.3
    started = loop.time()
    await core.list_namespaced_pod("default")
    assert loop.time() - started < 0.3


async def test_request_counts_by_verb_and_pattern(kube_api: KubeApiEmulator, kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    await core.list_namespaced_pod("default")
    await core.list_namespaced_pod("other")
    await core.list_pod_for_all_namespaces()
    assert kube_api.faults.counts[("list", "/api/v1/namespaces/{namespace}/pods")] == 2
    assert kube_api.faults.counts[("list", "/api/v1/pods")] == 1
    assert kube_api.faults.count("list") == 3


async def test_admin_endpoint_programs_faults_over_http(kube_api: KubeApiEmulator) -> None:
    async with aiohttp.ClientSession(kube_api.url) as http:
        async with http.post("/_emulator/faults", json={"status": 500, "verb": "get", "path": "/version|/api$"}) as r:
            assert r.status == 200
        async with http.get("/api") as r:
            assert r.status == 500
        async with http.get("/api") as r:
            assert r.status == 200
        async with http.post("/_emulator/compact") as r:
            assert (await r.json())["resourceVersion"] == str(kube_api.store.resource_version)
        async with http.get("/_emulator/requests") as r:
            counts = (await r.json())["counts"]
    assert {"verb": "get", "pattern": "/api", "count": 2} in counts
    assert kube_api.store.compacted_resource_version == kube_api.store.resource_version


async def test_bearer_token_is_required_when_configured(tmp_path: Path) -> None:
    async with KubeApiEmulator(token="s3cret") as emu:
        async with aiohttp.ClientSession(emu.url) as http:
            async with http.get("/api/v1/namespaces") as r:
                assert r.status == 401
                assert (await r.json())["reason"] == "Unauthorized"
            async with http.get("/api/v1/namespaces", headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
        api = await api_client_for(emu.write_kubeconfig(tmp_path / "kubeconfig"))
        try:
            namespaces = await client.CoreV1Api(api).list_namespace()
        finally:
            await api.close()
    assert {"default", "kube-system"} <= {n.metadata.name for n in namespaces.items}
