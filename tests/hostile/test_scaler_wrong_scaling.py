"""Issue #12 items 5, 8, 9 and the scaler's part of 12, against the real scaler (in-process, real NATS,
emulated API over HTTP): a fetcher clock far ahead, holding without metrics, zero thresholds, and the
state a deleted VA leaves behind."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from services.sandbox.kubeapi import KubeApiEmulator
from services.scaler import telemetry
from shared import messages, natsio
from shared.subjects import SubjectKind
from tests.fixtures.scaler import NS, S, eventually, gt, running_scaler, status_with


def _patches(kube_api: KubeApiEmulator, name: str) -> int:
    return sum(1 for r in kube_api.faults.requests if r.verb == "patch" and r.path.endswith(f"/deployments/{name}/scale"))


async def _true(value: bool) -> bool:
    return value


async def test_a_snapshot_from_a_fast_clock_does_not_blind_the_scaler(scaler_setup: Any) -> None:
    # Item 5: a fetcher node whose clock stepped an hour ahead published one snapshot (light load);
    # later real snapshots (saturated) must still be acted on, and the skew is counted.
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=2, cost="10")
    skew = telemetry.INPUT_WARNINGS.labels(reason="clock_skew")
    before = skew._value.get()
    async with running_scaler(settings()):
        t = await cluster.target("a", cost=10)
        future = messages.MetricsSnapshot(
            namespace=NS, name="a", at=messages.utcnow() + timedelta(hours=1),
            collected_at=messages.utcnow() + timedelta(hours=1), deployment_generation=t.deployment_generation,
            replicas=tuple(messages.ReplicaMetrics(pod=f"a-{i}", kv_cache_usage=0.1, waiting=0) for i in range(2)),
        )
        await natsio.publish(cluster.js, S.metrics(NS, "a"), future)
        await asyncio.sleep(0.2)
        await cluster.snapshot(t, [0.95, 0.95])  # real, saturated, stamped now
        assert await eventually(lambda: gt(cluster.replicas("a"), 2))
        assert skew._value.get() == before + 1


async def test_holding_means_holding_even_out_of_bounds(scaler_setup: Any, kube_api: KubeApiEmulator) -> None:
    # Item 8: a Deployment at 6 whose VA allows at most 3, and no metrics at all: nothing is resized
    # (it was 6 -> 3 before); the VA says why, and the spec is corrected once a decision can be made.
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=6, cost="10", max_replicas=3)
    async with running_scaler(settings()):
        await cluster.target("a", cost=10, max_replicas=3)
        await eventually(lambda: status_with(cluster, "a", "conditions"))
        await asyncio.sleep(1.5)  # three reconcile ticks
        assert _patches(kube_api, "a") == 0 and await cluster.replicas("a") == 6
        status = await cluster.va_status("a")
        ready = next(c for c in status["conditions"] if c["type"] == "OptimizationReady")
        assert ready["status"] == "False" and "outside [1, 3]" in ready["message"]
        t = await cluster.target("a", cost=10, max_replicas=3)
        await cluster.snapshot(t, [0.5] * 6)
        assert await eventually(lambda: _replicas_are(cluster, "a", 3))


async def test_zero_thresholds_are_refused_and_an_idle_model_does_not_grow(
    scaler_setup: Any, kube_api: KubeApiEmulator
) -> None:
    # Item 9: queueLengthThreshold 0 made every replica saturated; an idle model grew by one per tick.
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=1, cost="10")
    cm = {"metadata": {"name": "saturation-scaling-config", "namespace": "wva-system"},
          "data": {"default": "queueLengthThreshold: 0\nqueueSpareTrigger: 0\n"}}
    await cluster.core.create_namespaced_config_map("wva-system", cm)
    invalid = telemetry.CONFIG_RELOADS.labels(outcome="invalid")
    before = invalid._value.get()
    async with running_scaler(settings()):
        t = await cluster.target("a", cost=10)
        for _ in range(4):
            await cluster.snapshot(t, [0.0])  # idle
            await asyncio.sleep(0.3)
        assert _patches(kube_api, "a") == 0 and await cluster.replicas("a") == 1
        assert invalid._value.get() == before + 1


async def test_a_deleted_va_leaves_no_series_and_no_state(scaler_setup: Any) -> None:
    # Item 12: per-VA series are removed with the VA; the invalidation that follows its deletion
    # creates nothing (the scaler used to re-create the VA's entry from it).
    cluster, settings = scaler_setup
    await cluster.add_variant("gone", replicas=1, cost="10")
    decisions: list[messages.Decision] = []

    async def on(msg: Msg) -> None:
        decision = messages.events_decoder.decode(msg.data)
        assert isinstance(decision, messages.Decision)
        decisions.append(decision)

    sub = await cluster.nc.subscribe(S.wildcard(SubjectKind.DECISIONS), cb=on)
    async with running_scaler(settings()):
        t = await cluster.target("gone", cost=10)
        await cluster.snapshot(t, [0.95])
        await eventually(lambda: gt(cluster.replicas("gone"), 1))  # a scaling counter series exists now
        assert _series("gone")
        await natsio.publish(cluster.js, S.targets(NS, "gone"), messages.TargetDeleted(namespace=NS, name="gone", at=messages.utcnow()))
        await natsio.publish(
            cluster.js,
            S.invalidate(NS, "gone"),
            messages.Invalidation(namespace=NS, name="gone", at=messages.utcnow(), reason="va_deleted", deployment_generation=9),
        )
        await eventually(lambda: _true(not _series("gone")))
        count = len(decisions)
        await asyncio.sleep(1.0)  # two reconcile ticks: a re-created entry would decide again
        assert len(decisions) == count
    await sub.unsubscribe()


def _series(va: str) -> list[str]:
    return [
        f"{sample.name}{sample.labels}"
        for metric in REGISTRY.collect()
        if metric.name.startswith("wva_")
        for sample in metric.samples
        if sample.labels.get("variant_name") == va
    ]


async def _replicas_are(cluster: Any, name: str, n: int) -> bool:
    return bool(await cluster.replicas(name) == n)
