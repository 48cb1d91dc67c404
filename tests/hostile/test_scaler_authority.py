"""Issue #12 items 6 and 7: the scaler takes data from NATS but authority from the Kubernetes API.

A forged Target on NATS names a Deployment no VA scales, or claims bounds its VA does not have; two
VAs name one Deployment. The real scaler (in-process, real NATS, emulated API over HTTP) must never
patch on a message's word, and must say why on the VAs concerned.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from nats.aio.msg import Msg

from services.sandbox.kubeapi import KubeApiEmulator
from services.scaler import telemetry
from shared import messages, natsio
from shared.subjects import SubjectKind
from tests.fixtures.scaler import NS, S, deployment, eventually, running_scaler, status_with, va


def _patches(kube_api: KubeApiEmulator, name: str, namespace: str = NS) -> int:
    return sum(
        1 for r in kube_api.faults.requests if r.verb == "patch" and r.path.endswith(f"/namespaces/{namespace}/deployments/{name}/scale")
    )


async def _decisions(cluster: Any) -> tuple[list[messages.Decision], Any]:
    seen: list[messages.Decision] = []

    async def on(msg: Msg) -> None:
        decision = messages.events_decoder.decode(msg.data)
        assert isinstance(decision, messages.Decision)
        seen.append(decision)

    return seen, await cluster.nc.subscribe(S.wildcard(SubjectKind.DECISIONS), cb=on)


async def test_a_forged_target_for_a_deployment_no_va_names_is_never_patched(
    scaler_setup: Any, kube_api: KubeApiEmulator
) -> None:
    cluster, settings = scaler_setup
    await cluster.apps.create_namespaced_deployment("kube-system", deployment("coredns", 2, namespace="kube-system"))
    refused = telemetry.ACTUATIONS.labels(outcome="refused")
    before = refused._value.get()
    seen, sub = await _decisions(cluster)
    async with running_scaler(settings()):
        forged = messages.Target(
            namespace="kube-system", name="coredns", at=messages.utcnow(), model_id="x", resolved=True,
            min_replicas=500, max_replicas=500, scale_target=messages.ScaleTarget(name="coredns"),
            deployment_generation=1, spec_replicas=2, ready_replicas=2,
        )
        await natsio.publish(cluster.js, S.targets("kube-system", "coredns"), forged)
        await natsio.publish(
            cluster.js,
            S.metrics("kube-system", "coredns"),
            messages.MetricsSnapshot(
                namespace="kube-system", name="coredns", at=messages.utcnow(), collected_at=messages.utcnow(),
                deployment_generation=1,
                replicas=tuple(messages.ReplicaMetrics(pod=f"p{i}", kv_cache_usage=0.5, waiting=0) for i in range(2)),
            ),
        )
        await eventually(lambda: _any(seen, "coredns", desired=500))  # the core wants 500: the message's bounds
        await asyncio.sleep(0.5)
        assert _patches(kube_api, "coredns", "kube-system") == 0
        assert (await cluster.apps.read_namespaced_deployment("coredns", "kube-system")).spec.replicas == 2
        decision = await eventually(lambda: _with_outcome(seen, "coredns", "refused"))
        assert "no VariantAutoscaling kube-system/coredns" in decision.detail
        assert refused._value.get() >= before + 1
    await sub.unsubscribe()


async def test_a_forged_target_cannot_redirect_or_widen_a_real_va(scaler_setup: Any, kube_api: KubeApiEmulator) -> None:
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=1, cost="10")  # its VA allows [1, 10]
    await cluster.apps.create_namespaced_deployment(NS, deployment("victim", 3))
    seen, sub = await _decisions(cluster)
    async with running_scaler(settings()):
        real = await cluster.target("a", cost=10)
        redirected = msgspec.structs.replace(real, scale_target=messages.ScaleTarget(name="victim"), at=messages.utcnow())
        await natsio.publish(cluster.js, S.targets(NS, "a"), redirected)
        await cluster.snapshot(redirected, [0.9])
        await eventually(lambda: _any(seen, "a", desired=2))
        await asyncio.sleep(0.5)
        assert _patches(kube_api, "victim") == 0
        decision = await eventually(lambda: _with_outcome(seen, "a", "refused"))
        assert "scales Deployment a, not Deployment victim" in decision.detail
        status = await eventually(lambda: status_with(cluster, "a", "conditions"))
        resolved = next(c for c in status["conditions"] if c["type"] == "TargetResolved")
        assert (resolved["status"], resolved["reason"]) == ("False", "ActuationRefused")
        # Bounds come from the API too: a message claiming max 500 for a VA of max 10 is refused.
        widened = msgspec.structs.replace(real, min_replicas=20, max_replicas=500, at=messages.utcnow())
        await natsio.publish(cluster.js, S.targets(NS, "a"), widened)
        await cluster.snapshot(widened, [0.9])
        decision = await eventually(
            lambda: _with_outcome(seen, "a", "refused", containing="differ from the VariantAutoscaling's [1, 10]")
        )
        assert decision.desired == 20
        await asyncio.sleep(0.3)
    await sub.unsubscribe()
    assert _patches(kube_api, "victim") == 0 and _patches(kube_api, "a") == 0
    assert (await cluster.apps.read_namespaced_deployment("victim", NS)).spec.replicas == 3


async def test_two_vas_naming_one_deployment_are_not_actuated_and_both_say_why(
    scaler_setup: Any, kube_api: KubeApiEmulator
) -> None:
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=2, cost="10")
    second = va("b", "10")
    second["spec"]["scaleTargetRef"]["name"] = "a"
    await cluster.custom.create_namespaced_custom_object("llmd.ai", "v1alpha1", NS, "variantautoscalings", second)
    async with running_scaler(settings()):
        ta = await cluster.target("a", cost=10)
        tb = msgspec.structs.replace(ta, name="b", model_id="other-model", at=messages.utcnow())
        await natsio.publish(cluster.js, S.targets(NS, "b"), tb)
        # One would scale up and the other down: before, they fought forever (2, 4, 2, 4, ...).
        for _ in range(3):
            await cluster.snapshot(ta, [0.95, 0.95])
            await cluster.snapshot(tb, [0.05, 0.05])
            await asyncio.sleep(0.3)
        for name in ("a", "b"):
            status = await eventually(lambda n=name: status_with(cluster, n, "conditions"))  # type: ignore[misc]
            resolved = next(c for c in status["conditions"] if c["type"] == "TargetResolved")
            assert (resolved["status"], resolved["reason"]) == ("False", "ScaleTargetConflict")
            assert "a, b" in resolved["message"]
    assert _patches(kube_api, "a") == 0
    assert await cluster.replicas("a") == 2


async def _any(seen: list[messages.Decision], name: str, *, desired: int) -> messages.Decision | None:
    return next((d for d in seen if d.name == name and d.desired == desired), None)


async def _with_outcome(
    seen: list[messages.Decision], name: str, outcome: str, *, containing: str = ""
) -> messages.Decision | None:
    return next(
        (d for d in seen if d.name == name and getattr(d, "outcome", "") == outcome and containing in d.detail), None
    )

