"""The deployment controller: ReplicaSets per template, pods with owner references, readiness after the
start-up delay, the PodRuntime hooks, replacement of deleted pods, rollouts and garbage collection."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from kubernetes_asyncio import client

from services.sandbox.kubeapi import Change, KubeApiEmulator
from tests.integration.kubeapi.objects import deployment


def pods_of(emu: KubeApiEmulator, app: str) -> list[dict[str, Any]]:
    return emu.store.list("pods", "default", label_selector=f"app={app}")[0]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


class RecordingRuntime:
    def __init__(self) -> None:
        self.ports = itertools.count(9100)
        self.started: list[str] = []
        self.stopped: list[str] = []
        self._changed = asyncio.Event()

    async def start(self, pod: dict[str, Any]) -> int | None:
        self.started.append(pod["metadata"]["name"])
        return next(self.ports)

    async def stop(self, pod: dict[str, Any]) -> None:
        self.stopped.append(pod["metadata"]["name"])
        self._changed.set()

    async def wait_stopped(self, count: int) -> None:
        async with asyncio.timeout(3):
            while len(self.stopped) < count:
                self._changed.clear()
                await self._changed.wait()


async def test_scale_up_creates_ready_pods_owned_through_a_replicaset(
    kube_api: KubeApiEmulator, kube_client: client.ApiClient
) -> None:
    apps = client.AppsV1Api(kube_client)
    d = await apps.create_namespaced_deployment("default", deployment("web", replicas=1))
    await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    await kube_api.store.wait_for(lambda: len(pods_of(kube_api, "web")) == 3 and all(map(ready, pods_of(kube_api, "web"))))

    rss = (await apps.list_namespaced_replica_set("default")).items
    assert len(rss) == 1
    rs = rss[0]
    pod_hash = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"web-{pod_hash}"
    assert rs.metadata.owner_references[0].uid == d.metadata.uid and rs.metadata.owner_references[0].controller
    for pod in pods_of(kube_api, "web"):
        owner = pod["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "ReplicaSet", rs.metadata.name, rs.metadata.uid, True,
        )
        assert pod["metadata"]["labels"]["pod-template-hash"] == pod_hash
        assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"] == "127.0.0.1"

    async def settled() -> client.V1Deployment:
        async with asyncio.timeout(3):
            while True:
                dep = await apps.read_namespaced_deployment("web", "default")
                if dep.status.ready_replicas == 3:
                    return dep
                await asyncio.sleep(0.02)

    status = (await settled()).status
    assert (status.replicas, status.updated_replicas, status.available_replicas, status.observed_generation) == (3, 3, 3, 2)


async def test_pods_become_ready_only_after_the_startup_delay() -> None:
    async with KubeApiEmulator(startup_delay=0.5) as emu:
        emu.store.create("deployments", deployment("slow", replicas=1), namespace="default")
        await emu.store.wait_for(lambda: any(p["status"]["phase"] == "Running" for p in pods_of(emu, "slow")))
        assert not any(map(ready, pods_of(emu, "slow")))
        await emu.store.wait_for(lambda: all(map(ready, pods_of(emu, "slow"))))


async def test_scale_down_deletes_pods_and_stops_their_runtime() -> None:
    runtime = RecordingRuntime()
    async with KubeApiEmulator(startup_delay=0.05, runtime=runtime) as emu:
        emu.store.create("deployments", deployment("web", replicas=3), namespace="default")
        await emu.store.wait_for(lambda: len(pods_of(emu, "web")) == 3 and all(map(ready, pods_of(emu, "web"))))
        assert len(runtime.started) == 3
        pod = pods_of(emu, "web")[0]
        port = pod["metadata"]["annotations"]["prometheus.io/port"]
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        metrics = [p for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "metrics"]
        assert metrics == [{"name": "metrics", "containerPort": int(port), "protocol": "TCP"}]

        emu.store.patch("deployments", "default", "web", {"spec": {"replicas": 1}})
        await emu.store.wait_for(lambda: len(pods_of(emu, "web")) == 1)
        await runtime.wait_stopped(2)
        assert set(runtime.stopped).isdisjoint({p["metadata"]["name"] for p in pods_of(emu, "web")})
    assert sorted(runtime.stopped) == sorted(runtime.started), "stop() stops the runtimes of the remaining pods"


async def test_user_deleted_pod_is_replaced(kube_api: KubeApiEmulator, kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    kube_api.store.create("deployments", deployment("web", replicas=2), namespace="default")
    await kube_api.store.wait_for(lambda: len(pods_of(kube_api, "web")) == 2 and all(map(ready, pods_of(kube_api, "web"))))
    victim = pods_of(kube_api, "web")[0]["metadata"]["name"]
    await core.delete_namespaced_pod(victim, "default")
    await kube_api.store.wait_for(
        lambda: len(pods_of(kube_api, "web")) == 2
        and victim not in {p["metadata"]["name"] for p in pods_of(kube_api, "web")}
        and all(map(ready, pods_of(kube_api, "web")))
    )


async def test_template_change_rolls_out_a_new_replicaset(kube_api: KubeApiEmulator, kube_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_client)
    await apps.create_namespaced_deployment("default", deployment("web", replicas=2, image="vllm:v1"))
    await kube_api.store.wait_for(lambda: len(pods_of(kube_api, "web")) == 2)
    old_hash = pods_of(kube_api, "web")[0]["metadata"]["labels"]["pod-template-hash"]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": "vllm:v2"}]}}}}
    rolled = await apps.patch_namespaced_deployment("web", "default", patch)
    assert rolled.spec.template.spec.containers[0].ports[0].container_port == 8000, "strategic merge keeps fields"

    def rolled_out() -> bool:
        pods = pods_of(kube_api, "web")
        return len(pods) == 2 and all(
            p["spec"]["containers"][0]["image"] == "vllm:v2" and ready(p) for p in pods
        )

    await kube_api.store.wait_for(rolled_out)
    new_hash = pods_of(kube_api, "web")[0]["metadata"]["labels"]["pod-template-hash"]
    assert new_hash != old_hash
    rss = {rs["metadata"]["name"]: rs for rs in kube_api.store.list("replicasets", "default")[0]}
    assert rss[f"web-{old_hash}"]["spec"]["replicas"] == 0
    assert rss[f"web-{new_hash}"]["spec"]["replicas"] == 2
    assert rss[f"web-{new_hash}"]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


async def test_deleting_a_deployment_collects_its_replicasets_and_pods(kube_api: KubeApiEmulator) -> None:
    kube_api.store.create("deployments", deployment("web", replicas=2), namespace="default")
    await kube_api.store.wait_for(lambda: len(pods_of(kube_api, "web")) == 2)
    kube_api.store.delete("deployments", "default", "web")
    await kube_api.store.wait_for(
        lambda: not pods_of(kube_api, "web") and not kube_api.store.list("replicasets", "default")[0]
    )


async def test_in_process_subscription_follows_pods(kube_api: KubeApiEmulator) -> None:
    sub = kube_api.store.subscribe("pods")
    seen: list[Change] = []

    async def follow_until_ready() -> None:
        async for change in sub:
            seen.append(change)
            if change.type == "MODIFIED" and ready(change.object):
                return

    task = asyncio.create_task(follow_until_ready())
    kube_api.store.create("deployments", deployment("web", replicas=1), namespace="default")
    await asyncio.wait_for(task, timeout=3)
    sub.close()
    assert seen[0].type == "ADDED" and seen[0].resource.kind == "Pod"
