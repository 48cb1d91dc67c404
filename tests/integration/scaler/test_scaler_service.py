"""The scaler service against a real nats-server and the emulated Kubernetes API over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from services.sandbox.kubeapi import KubeApiEmulator
from services.scaler import telemetry as scaler_metrics
from shared import messages
from shared.observability import MESSAGES_REJECTED as REJECTED
from shared.subjects import SubjectKind
from tests.fixtures.scaler import MODEL, NS, S, eq, eventually, first, gt, running_scaler, status_with, true


async def test_saturation_scales_the_cheapest_variant_and_reports_everywhere(scaler_setup: Any) -> None:
    cluster, settings = scaler_setup
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

        assert await eventually(lambda: eq(cluster.replicas("cheap"), 2))
        assert await cluster.replicas("pricey") == 1
        up = await eventually(lambda: first(decisions, lambda d: d.name == "cheap" and d.desired == 2))
        assert up.applied and up.reason.startswith("scale_up") and up.current == 1
        status = await eventually(lambda: status_with(cluster, "cheap", "desiredOptimizedAlloc"))
        assert status["desiredOptimizedAlloc"]["numReplicas"] == 2
        assert status["desiredOptimizedAlloc"]["accelerator"] == "A100"
        assert status["actuation"] == {"applied": True}
        assert {c["type"] for c in status["conditions"]} >= {"TargetResolved", "MetricsAvailable", "OptimizationReady"}
        events = await cluster.core.list_namespaced_event(NS)
        assert any(e.reason == "ScaledUp" and e.involved_object.name == "cheap" for e in events.items)
        labels = {"variant_name": "cheap", "namespace": NS, "accelerator_type": "A100"}
        assert REGISTRY.get_sample_value("wva_desired_replicas", labels) == 2
    await sub.unsubscribe()


async def test_conflicts_and_server_errors_on_scale_are_retried(scaler_setup: Any, kube_api: KubeApiEmulator) -> None:
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=1, cost="10")
    kube_api.faults.fail(409, times=2, path=r"/deployments/a/scale$", verb="patch")
    kube_api.faults.fail(500, times=1, path=r"/deployments/a/scale$", verb="patch")
    before = scaler_metrics.ACTUATIONS.labels(outcome="applied")._value.get()
    async with running_scaler(settings()):
        t = await cluster.target("a", cost=10)
        await cluster.snapshot(t, [0.9])
        assert await eventually(lambda: gt(cluster.replicas("a"), 1))
    assert scaler_metrics.ACTUATIONS.labels(outcome="applied")._value.get() == before + 1
    patches = [r for r in kube_api.faults.requests if r.verb == "patch" and r.path.endswith("/deployments/a/scale")]
    assert len(patches) == 4  # two 409s, one 500, then success


@pytest.mark.parametrize("mode", ["hpa", "dry-run"])
async def test_hpa_and_dry_run_leave_replicas_alone_but_report(scaler_setup: Any, mode: str) -> None:
    cluster, settings = scaler_setup
    name = f"a-{mode}"  # gauges are process-wide: a name per mode, so one run cannot pass for the other
    await cluster.add_variant(name, replicas=1, cost="10")
    async with running_scaler(settings(scaler_mode=mode)):
        t = await cluster.target(name, cost=10)
        await cluster.snapshot(t, [0.95])
        status = await eventually(lambda: status_with(cluster, name, "desiredOptimizedAlloc"))
        assert status["desiredOptimizedAlloc"]["numReplicas"] >= 2
        assert status["actuation"] == {"applied": False}
        labels = {"variant_name": name, "namespace": NS, "accelerator_type": "A100"}
        assert (REGISTRY.get_sample_value("wva_desired_replicas", labels) or 0) >= 2
        await asyncio.sleep(0.3)
        assert await cluster.replicas(name) == 1


async def test_paused_va_is_decided_but_not_actuated(scaler_setup: Any) -> None:
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=1, cost="10")
    async with running_scaler(settings()):
        t = await cluster.target("a", cost=10, paused=True)
        await cluster.snapshot(t, [0.95])
        status = await eventually(lambda: status_with(cluster, "a", "desiredOptimizedAlloc"))
        assert status["desiredOptimizedAlloc"]["numReplicas"] >= 2
        await asyncio.sleep(0.3)
        assert await cluster.replicas("a") == 1


async def test_a_missing_snapshot_nudges_the_fetcher_and_bad_messages_are_skipped(scaler_setup: Any) -> None:
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=1, cost="10")
    requests: list[messages.FetchRequest] = []

    async def fetcher(msg: Msg) -> None:
        requests.append(messages.fetch_decoder.decode(msg.data))
        await msg.respond(b"garbage reply")  # never read: snapshots come on the stream only

    sub = await cluster.nc.subscribe(S.wildcard(SubjectKind.FETCH), cb=fetcher)
    rejected = REJECTED.labels(subject_kind="metrics", reason="malformed")
    before = rejected._value.get()
    async with running_scaler(settings(fetch_interval=1.0)):
        t = await cluster.target("a", cost=10)
        await cluster.nc.publish(S.metrics(NS, "a"), b"{not json")
        # No snapshot: a tick nudges the fetcher, at most once per fetch interval.
        await eventually(lambda: true(len(requests) >= 1))
        assert requests[0].fresh and requests[0].name == "a"
        await asyncio.sleep(0.6)
        assert len(requests) <= 2
        await eventually(lambda: true(rejected._value.get() == before + 1))
        # Still alive: a valid snapshot after all that is acted on.
        await cluster.snapshot(t, [0.95])
        assert await eventually(lambda: gt(cluster.replicas("a"), 1))
    await sub.unsubscribe()


async def test_invalid_configmap_is_reported_and_the_last_valid_one_stays(scaler_setup: Any) -> None:
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=1, cost="10")
    cm = {"metadata": {"name": "saturation-scaling-config", "namespace": "wva-system"},
          "data": {"default": "kvCacheThreshold: 0.5\nkvSpareTrigger: 0.1\n"}}
    await cluster.core.create_namespaced_config_map("wva-system", cm)
    applied = scaler_metrics.CONFIG_RELOADS.labels(outcome="applied")
    invalid = scaler_metrics.CONFIG_RELOADS.labels(outcome="invalid")
    a0, i0 = applied._value.get(), invalid._value.get()
    async with running_scaler(settings()):
        await eventually(lambda: true(applied._value.get() == a0 + 1))
        cm["data"] = {"default": "kvCacheThreshold: 0.05\nkvSpareTrigger: 0.1\n"}  # threshold < trigger
        await cluster.core.replace_namespaced_config_map("saturation-scaling-config", "wva-system", cm)
        await eventually(lambda: true(invalid._value.get() == i0 + 1))
        # 0.45 KV is saturated only under the 0.5 threshold still in force.
        t = await cluster.target("a", cost=10)
        await cluster.snapshot(t, [0.55])
        assert await eventually(lambda: gt(cluster.replicas("a"), 1))




async def test_wvas_configmap_name_selects_v2_and_its_gauges_are_exported(scaler_setup: Any) -> None:
    # A WVA v0.9 user's ConfigMap, under WVA's name, with a per-model override key "<modelID>#<namespace>".
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=2, cost="10")
    cm = {
        "metadata": {"name": "wva-saturation-scaling-config", "namespace": "wva-system"},
        "data": {"default": "scaleUpThreshold: 0.85\n", f"{MODEL}#{NS}": "analyzer: v2\nscaleDownBoundary: 0.7\n"},
    }
    await cluster.core.create_namespaced_config_map("wva-system", cm)
    decisions: list[messages.Decision] = []

    async def on_decision(msg: Msg) -> None:
        decision = messages.events_decoder.decode(msg.data)
        assert isinstance(decision, messages.Decision)
        decisions.append(decision)

    sub = await cluster.nc.subscribe(S.wildcard(SubjectKind.DECISIONS), cb=on_decision)
    async with running_scaler(settings()):
        t = await cluster.target("a", cost=10)
        # docs/algorithms.md V2, first row: KV 0.70 and 0.75 of 16,384 tokens: D 23,756.8, RC 1,734.8 -> +1.
        await cluster.snapshot(t, [0.70, 0.75], cache_tokens=16384)
        assert await eventually(lambda: gt(cluster.replicas("a"), 2))
        up = await eventually(lambda: first(decisions, lambda d: d.reason == "scale_up_required_capacity"))
        assert up.numbers.required == pytest.approx(1734.8, abs=0.1) and up.applied
        assert [(c.variant, c.source) for c in up.numbers.capacities] == [("a", "k1")]
        # Once the step is decided, what is coming covers the demand: nothing required, 90.6 % used.
        labels = {"model_name": MODEL, "namespace": NS}
        await eventually(lambda: true(REGISTRY.get_sample_value("wva_required_capacity", labels) == 0))
        assert REGISTRY.get_sample_value("wva_spare_capacity", labels) == 0
        assert REGISTRY.get_sample_value("wva_saturation_utilization", labels) == pytest.approx(23756.8 / 26214.4)
    await sub.unsubscribe()
