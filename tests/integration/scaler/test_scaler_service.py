"""The scaler service against a real nats-server and the emulated Kubernetes API over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.sandbox.kubeapi import KubeApiEmulator
from services.scaler import service
from services.scaler import telemetry as scaler_metrics
from services.scaler.settings import ScalerSettings
from shared import kube, lifecycle, messages, natsio, streams
from shared.subjects import SubjectKind, Subjects
from tests.fixtures.servers import NatsServer

S = Subjects()
NS = "llm"
MODEL = "meta/llama-3.1-8b"


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.8"}]},
            },
        },
    }


def va(name: str, cost: str, max_replicas: int = 10) -> dict[str, Any]:
    return {
        "apiVersion": kube.API_VERSION,
        "kind": kube.KIND,
        "metadata": {"name": name, "namespace": NS, "labels": {kube.ACCELERATOR_LABEL: "A100"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "modelID": MODEL,
            "variantCost": cost,
            "minReplicas": 1,
            "maxReplicas": max_replicas,
        },
    }


class Cluster:
    def __init__(self, api: client.ApiClient, nc: Client) -> None:
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.nc = nc
        self.js = nc.jetstream()

    async def add_variant(self, name: str, *, replicas: int, cost: str) -> None:
        await self.apps.create_namespaced_deployment(NS, deployment(name, replicas))
        await self.custom.create_namespaced_custom_object(kube.GROUP, kube.VERSION, NS, kube.PLURAL, va(name, cost))

    async def target(self, name: str, *, cost: float, paused: bool = False) -> messages.Target:
        """What the watcher would publish for this variant right now."""
        d = await self.apps.read_namespaced_deployment(name, NS)
        t = messages.Target(
            namespace=NS,
            name=name,
            at=messages.utcnow(),
            model_id=MODEL,
            variant_cost=cost,
            accelerator="A100",
            min_replicas=1,
            max_replicas=10,
            scale_target=messages.ScaleTarget(name=name),
            resolved=True,
            deployment_generation=d.metadata.generation,
            spec_replicas=d.spec.replicas,
            ready_replicas=d.spec.replicas,
            paused=paused,
        )
        await natsio.publish(self.js, S.targets(NS, name), t)
        return t

    async def snapshot(self, target: messages.Target, kv: list[float]) -> None:
        snap = messages.MetricsSnapshot(
            namespace=NS,
            name=target.name,
            at=messages.utcnow(),
            model_id=MODEL,
            collected_at=messages.utcnow(),
            deployment_generation=target.deployment_generation,
            allocation=messages.AllocationMetrics(arrival_rate=5.0),
            replicas=tuple(
                messages.ReplicaMetrics(pod=f"{target.name}-{i}", kv_cache_usage=v, waiting=0, running=4)
                for i, v in enumerate(kv)
            ),
        )
        await natsio.publish(self.js, S.metrics(NS, target.name), snap)

    async def replicas(self, name: str) -> int:
        return int((await self.apps.read_namespaced_deployment(name, NS)).spec.replicas)

    async def va_status(self, name: str) -> dict[str, Any]:
        obj = await self.custom.get_namespaced_custom_object(kube.GROUP, kube.VERSION, NS, kube.PLURAL, name)
        return dict(obj.get("status") or {})


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


@contextlib.asynccontextmanager
async def running_scaler(settings: ScalerSettings) -> AsyncIterator[None]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(lifecycle.serve("scaler", settings, service.main, stop=stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0


@pytest.fixture
async def setup(
    nats_server: NatsServer, kube_api: KubeApiEmulator, kubeconfig: Path, kube_client: client.ApiClient
) -> AsyncIterator[tuple[Cluster, Callable[..., ScalerSettings]]]:
    nc = await natsio.connect(ScalerSettings(nats_url=nats_server.url), name="test")
    await streams.ensure(nc.jetstream(), S, streams.StreamSpec())

    def settings(**overrides: Any) -> ScalerSettings:
        values: dict[str, Any] = {
            "nats_url": nats_server.url,
            "http_addr": "127.0.0.1:0",
            "kubeconfig": str(kubeconfig),
            "reconcile_interval": 0.5,
            "scale_down_stabilization": 1.0,
            "config_namespace": "wva-system",
        }
        values.update(overrides)
        return ScalerSettings(**values)

    try:
        yield Cluster(kube_client, nc), settings
    finally:
        await nc.close()


async def test_saturation_scales_the_cheapest_variant_and_reports_everywhere(setup: Any) -> None:
    cluster, settings = setup
    await cluster.add_variant("cheap", replicas=1, cost="40")
    await cluster.add_variant("pricey", replicas=1, cost="80")
    decisions: list[messages.Decision] = []

    async def on_decision(msg: Msg) -> None:
        decision = messages.events_decoder.decode(msg.data)
        assert isinstance(decision, messages.Decision)
        decisions.append(decision)

    sub = await cluster.nc.subscribe(S.wildcard(SubjectKind.DECISIONS), cb=on_decision)
    async with running_scaler(settings()):
        cheap = await cluster.target("cheap", cost=40)
        pricey = await cluster.target("pricey", cost=80)
        await cluster.snapshot(pricey, [0.79])
        await cluster.snapshot(cheap, [0.78])  # docs/algorithms.md: average spare 0.015 -> scale up A

        assert await eventually(lambda: _eq(cluster.replicas("cheap"), 2))
        assert await cluster.replicas("pricey") == 1
        up = await eventually(lambda: _first(decisions, lambda d: d.name == "cheap" and d.desired == 2))
        assert up.applied and up.reason.startswith("scale_up") and up.current == 1
        status = await eventually(lambda: _status_with(cluster, "cheap", "desiredOptimizedAlloc"))
        assert status["desiredOptimizedAlloc"]["numReplicas"] == 2
        assert status["desiredOptimizedAlloc"]["accelerator"] == "A100"
        assert status["actuation"] == {"applied": True}
        assert {c["type"] for c in status["conditions"]} >= {"TargetResolved", "MetricsAvailable", "OptimizationReady"}
        events = await cluster.core.list_namespaced_event(NS)
        assert any(e.reason == "ScaledUp" and e.involved_object.name == "cheap" for e in events.items)
        labels = {"variant_name": "cheap", "namespace": NS, "accelerator_type": "A100"}
        assert scaler_metrics.DESIRED.labels(**labels)._value.get() == 2
    await sub.unsubscribe()


async def test_conflicts_and_server_errors_on_scale_are_retried(setup: Any, kube_api: KubeApiEmulator) -> None:
    cluster, settings = setup
    await cluster.add_variant("a", replicas=1, cost="10")
    kube_api.faults.fail(409, times=2, path=r"/deployments/a/scale$", verb="patch")
    kube_api.faults.fail(500, times=1, path=r"/deployments/a/scale$", verb="patch")
    before = scaler_metrics.ACTUATIONS.labels(outcome="applied")._value.get()
    async with running_scaler(settings()):
        t = await cluster.target("a", cost=10)
        await cluster.snapshot(t, [0.9])
        assert await eventually(lambda: _gt(cluster.replicas("a"), 1))
    assert scaler_metrics.ACTUATIONS.labels(outcome="applied")._value.get() == before + 1
    patches = [r for r in kube_api.faults.requests if r.verb == "patch" and r.path.endswith("/deployments/a/scale")]
    assert len(patches) == 4  # two 409s, one 500, then success


@pytest.mark.parametrize("mode", ["hpa", "dry-run"])
async def test_hpa_and_dry_run_leave_replicas_alone_but_report(setup: Any, mode: str) -> None:
    cluster, settings = setup
    name = f"a-{mode}"  # gauges are process-wide: a name per mode, so one run cannot pass for the other
    await cluster.add_variant(name, replicas=1, cost="10")
    async with running_scaler(settings(scaler_mode=mode)):
        t = await cluster.target(name, cost=10)
        await cluster.snapshot(t, [0.95])
        status = await eventually(lambda: _status_with(cluster, name, "desiredOptimizedAlloc"))
        assert status["desiredOptimizedAlloc"]["numReplicas"] >= 2
        assert status["actuation"] == {"applied": False}
        labels = {"variant_name": name, "namespace": NS, "accelerator_type": "A100"}
        assert scaler_metrics.DESIRED.labels(**labels)._value.get() >= 2
        await asyncio.sleep(0.3)
        assert await cluster.replicas(name) == 1


async def test_paused_va_is_decided_but_not_actuated(setup: Any) -> None:
    cluster, settings = setup
    await cluster.add_variant("a", replicas=1, cost="10")
    async with running_scaler(settings()):
        t = await cluster.target("a", cost=10, paused=True)
        await cluster.snapshot(t, [0.95])
        status = await eventually(lambda: _status_with(cluster, "a", "desiredOptimizedAlloc"))
        assert status["desiredOptimizedAlloc"]["numReplicas"] >= 2
        await asyncio.sleep(0.3)
        assert await cluster.replicas("a") == 1


async def test_invalidation_asks_the_fetcher_and_bad_messages_are_skipped(setup: Any) -> None:
    cluster, settings = setup
    await cluster.add_variant("a", replicas=1, cost="10")
    requests: list[messages.FetchRequest] = []

    async def fetcher(msg: Msg) -> None:
        request = messages.fetch_decoder.decode(msg.data)
        requests.append(request)
        await msg.respond(b"garbage reply")  # counted, not fatal

    sub = await cluster.nc.subscribe(S.wildcard(SubjectKind.FETCH), cb=fetcher)
    rejected = scaler_metrics.FETCH_REQUESTS.labels(outcome="bad_reply")
    before = rejected._value.get()
    async with running_scaler(settings()):
        t = await cluster.target("a", cost=10)
        await cluster.nc.publish(S.metrics(NS, "a"), b"{not json")
        await natsio.publish(
            cluster.js, S.invalidate(NS, "a"), messages.Invalidation(namespace=NS, name="a", at=messages.utcnow(), reason="template_changed")
        )
        await eventually(lambda: _true(len(requests) == 1))
        assert requests[0].fresh and requests[0].name == "a"
        await eventually(lambda: _true(rejected._value.get() == before + 1))
        # Still alive: a valid snapshot after all that is acted on.
        await cluster.snapshot(t, [0.95])
        assert await eventually(lambda: _gt(cluster.replicas("a"), 1))
    await sub.unsubscribe()


async def test_invalid_configmap_is_reported_and_the_last_valid_one_stays(setup: Any) -> None:
    cluster, settings = setup
    await cluster.add_variant("a", replicas=1, cost="10")
    cm = {"metadata": {"name": "saturation-scaling-config", "namespace": "wva-system"},
          "data": {"default": "kvCacheThreshold: 0.5\nkvSpareTrigger: 0.1\n"}}
    await cluster.core.create_namespaced_config_map("wva-system", cm)
    applied = scaler_metrics.CONFIG_RELOADS.labels(outcome="applied")
    invalid = scaler_metrics.CONFIG_RELOADS.labels(outcome="invalid")
    a0, i0 = applied._value.get(), invalid._value.get()
    async with running_scaler(settings()):
        await eventually(lambda: _true(applied._value.get() == a0 + 1))
        cm["data"] = {"default": "kvCacheThreshold: 0.05\nkvSpareTrigger: 0.1\n"}  # threshold < trigger
        await cluster.core.replace_namespaced_config_map("saturation-scaling-config", "wva-system", cm)
        await eventually(lambda: _true(invalid._value.get() == i0 + 1))
        # 0.45 KV is saturated only under the 0.5 threshold still in force.
        t = await cluster.target("a", cost=10)
        await cluster.snapshot(t, [0.55])
        assert await eventually(lambda: _gt(cluster.replicas("a"), 1))


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _gt(value: Any, expected: Any) -> bool:
    return bool(await value > expected)


async def _true(value: bool) -> bool:
    return value


async def _first(items: list[Any], pred: Callable[[Any], bool]) -> Any:
    return next((i for i in items if pred(i)), None)


async def _status_with(cluster: Cluster, name: str, key: str) -> dict[str, Any] | None:
    status = await cluster.va_status(name)
    return status if key in status else None


