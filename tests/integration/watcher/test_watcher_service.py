"""The watcher service against a real nats-server and the emulated Kubernetes API over HTTP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from prometheus_client import REGISTRY

from services.sandbox.kubeapi import KubeApiEmulator
from shared import kube
from shared.messages import Target, TargetDeleted
from tests.fixtures.servers import NatsServer
from tests.fixtures.watcher import Feed, RunningWatcher

StartWatcher = Callable[..., Awaitable[RunningWatcher]]
MODEL = "meta/llama-3.1-8b"


def deployment(name: str, *, replicas: int = 2, image: str = "vllm/vllm-openai:v0.8") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "vllm", "image": image, "ports": [{"name": "metrics", "containerPort": 9090}]}
                    ]
                },
            },
        },
    }


def va(
    name: str, *, target: str | None = None, cost: str = "10.0", labels: dict[str, str] | None = None, kind: str = "Deployment"
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {kube.ACCELERATOR_LABEL: "A100", **(labels or {})}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target or name},
            "modelID": MODEL,
            "variantCost": cost,
            "minReplicas": 1,
            "maxReplicas": 5,
        },
    }


def settled(feed: Feed, name: str, *, replicas: int, namespace: str = "default") -> Callable[[], Target | None]:
    def check() -> Target | None:
        t = feed.latest(name, namespace)
        if (
            isinstance(t, Target)
            and t.resolved
            and t.spec_replicas == replicas
            and t.ready_replicas == replicas
            and len(t.pods) == replicas
            and all(p.ready for p in t.pods)
        ):
            return t
        return None

    return check


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scale(kube_api: KubeApiEmulator, name: str, replicas: int, namespace: str = "default") -> None:
    kube_api.store.patch("deployments", namespace, name, {"spec": {"replicas": replicas}})


async def test_a_va_and_its_deployment_become_one_target_with_pods(
    kube_api: KubeApiEmulator, watcher_service: StartWatcher, watcher_feed: Feed
) -> None:
    await watcher_service()
    kube_api.store.create("deployments", deployment("llama"), namespace="default")
    kube_api.store.create("variantautoscalings", va("llama", cost="2.5"), namespace="default")

    t = await watcher_feed.wait_for(settled(watcher_feed, "llama", replicas=2), what="a settled target")
    assert (t.model_id, t.variant_cost, t.accelerator, t.min_replicas, t.max_replicas) == (MODEL, 2.5, "A100", 1, 5)
    assert (t.scale_target.kind, t.scale_target.name) == ("Deployment", "llama")
    assert (t.deployment_generation, t.va_generation, t.problems) == (1, 1, ())
    assert t.template_hash
    # Pods found through pod -> ReplicaSet -> Deployment, with the port named "metrics".
    assert [p.address for p in t.pods] == ["127.0.0.1:9090", "127.0.0.1:9090"]
    assert all(p.name.startswith("llama-") and p.phase == "Running" for p in t.pods)
    # Published on content change only: no two targets in a row say the same thing.
    mine = [msgspec.structs.replace(m, at=t.at) for m in watcher_feed.targets if m.name == "llama"]
    assert all(a != b for a, b in itertools.pairwise(mine))
    assert watcher_feed.reasons("llama") == []  # a new VA invalidates nothing


async def test_scale_image_cost_and_delete_each_invalidate(
    kube_api: KubeApiEmulator, watcher_service: StartWatcher, watcher_feed: Feed
) -> None:
    kube_api.store.create("deployments", deployment("llama", replicas=1), namespace="default")
    kube_api.store.create("variantautoscalings", va("llama"), namespace="default")
    await watcher_service()
    first = await watcher_feed.wait_for(settled(watcher_feed, "llama", replicas=1))

    scale(kube_api, "llama", 3)
    await watcher_feed.wait_for(lambda: "replicas_changed" in watcher_feed.reasons("llama"))
    t = await watcher_feed.wait_for(settled(watcher_feed, "llama", replicas=3), what="3 ready replicas")
    assert t.deployment_generation == 2

    kube_api.store.patch(
        "deployments", "default", "llama",
        {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9"}]}}}},
    )
    await watcher_feed.wait_for(lambda: "template_changed" in watcher_feed.reasons("llama"))
    t = await watcher_feed.wait_for(settled(watcher_feed, "llama", replicas=3))
    assert t.template_hash != first.template_hash
    inv = next(i for i in watcher_feed.invalidations if i.reason == "template_changed")
    assert (inv.deployment_generation, inv.template_hash) == (3, t.template_hash)

    kube_api.store.patch("variantautoscalings", "default", "llama", {"spec": {"variantCost": "4.0"}})
    await watcher_feed.wait_for(lambda: "target_changed" in watcher_feed.reasons("llama"))
    t2 = await watcher_feed.wait_for(
        lambda: (x := watcher_feed.latest("llama")) is not None and isinstance(x, Target) and x.variant_cost == 4.0 and x
    )
    assert isinstance(t2, Target) and t2.va_generation == 2

    kube_api.store.delete("variantautoscalings", "default", "llama")
    await watcher_feed.wait_for(lambda: isinstance(watcher_feed.latest("llama"), TargetDeleted))
    await watcher_feed.wait_for(lambda: "va_deleted" in watcher_feed.reasons("llama"))
    assert watcher_feed.reasons("llama") == ["replicas_changed", "template_changed", "target_changed", "va_deleted"]
    state = await watcher_feed.stream_state()
    assert isinstance(state[("default", "llama")], TargetDeleted)


async def test_an_unresolved_va_resolves_when_its_deployment_appears_and_invalid_vas_carry_problems(
    kube_api: KubeApiEmulator, watcher_service: StartWatcher, watcher_feed: Feed
) -> None:
    kube_api.store.create("variantautoscalings", va("early"), namespace="default")
    kube_api.store.create("variantautoscalings", va("sts", kind="StatefulSet"), namespace="default")
    await watcher_service()
    early = await watcher_feed.wait_for(lambda: watcher_feed.latest("early"))
    assert isinstance(early, Target) and not early.resolved and early.problems == ()
    sts = await watcher_feed.wait_for(lambda: watcher_feed.latest("sts"))
    assert isinstance(sts, Target) and not sts.resolved
    assert [p.field for p in sts.problems] == ["spec.scaleTargetRef.kind"]
    assert "StatefulSet" in sts.problems[0].message

    kube_api.store.create("deployments", deployment("early", replicas=1), namespace="default")
    await watcher_feed.wait_for(settled(watcher_feed, "early", replicas=1))
    await watcher_feed.wait_for(lambda: watcher_feed.reasons("early") == ["target_changed"])


async def test_410_relists_and_invalidates_every_va_without_crashing(
    kube_api: KubeApiEmulator, watcher_service: StartWatcher, watcher_feed: Feed
) -> None:
    kube_api.store.create("deployments", deployment("a", replicas=1), namespace="default")
    kube_api.store.create("variantautoscalings", va("a"), namespace="default")
    kube_api.store.create("variantautoscalings", va("b"), namespace="default")
    watcher = await watcher_service()
    await watcher_feed.wait_for(settled(watcher_feed, "a", replicas=1))
    expired = metric("wva_watcher_watch_restarts_total", kind="va", reason="expired")

    # A VA is deleted while the watches are away, and the history is compacted: they come back to an
    # ERROR event with 410, re-list, and find the deletion.
    kube_api.faults.add_latency(0.3, verb="watch", times=4)
    kube_api.faults.drop_watches()
    kube_api.store.delete("variantautoscalings", "default", "b")
    kube_api.faults.compact()
    await watcher_feed.wait_for(lambda: "relist" in watcher_feed.reasons("a"), what="relist for a")
    await watcher_feed.wait_for(lambda: isinstance(watcher_feed.latest("b"), TargetDeleted))
    # (a re-list of another kind may come first and invalidate b with relist before its own deletion)
    await watcher_feed.wait_for(lambda: watcher_feed.reasons("b")[-1:] == ["va_deleted"])
    assert metric("wva_watcher_watch_restarts_total", kind="va", reason="expired") > expired

    # A 410 as the HTTP status of the watch request itself is a re-list too.
    watcher_feed.clear()
    kube_api.faults.fail(410, verb="watch", path="variantautoscalings")
    kube_api.faults.drop_watches()
    await watcher_feed.wait_for(lambda: watcher_feed.reasons("a") == ["relist"], what="second relist")
    assert not watcher.task.done()
    scale(kube_api, "a", 2)
    await watcher_feed.wait_for(settled(watcher_feed, "a", replicas=2))


async def test_changes_made_while_watches_are_down_or_failing_still_arrive(
    kube_api: KubeApiEmulator, watcher_service: StartWatcher, watcher_feed: Feed
) -> None:
    kube_api.store.create("deployments", deployment("a", replicas=1), namespace="default")
    kube_api.store.create("variantautoscalings", va("a"), namespace="default")
    await watcher_service()
    await watcher_feed.wait_for(settled(watcher_feed, "a", replicas=1))

    # Dropped connections that take a while to come back; changes happen meanwhile.
    kube_api.faults.add_latency(0.4, verb="watch", times=4)
    kube_api.faults.drop_watches()
    scale(kube_api, "a", 2)
    kube_api.store.create("variantautoscalings", va("late", target="a"), namespace="default")
    await watcher_feed.wait_for(settled(watcher_feed, "a", replicas=2))
    await watcher_feed.wait_for(settled(watcher_feed, "late", replicas=2))
    # Resumed from the last resourceVersion, not re-listed: no relist invalidation.
    await watcher_feed.wait_for(lambda: watcher_feed.reasons("a") == ["replicas_changed"])

    # 500s and 429s on the way back: backoff, then recovery.
    errors = metric("wva_watcher_watch_restarts_total", kind="deployment", reason="error")
    kube_api.faults.fail(500, verb="watch", path="deployments", times=3)
    kube_api.faults.fail(429, verb="watch", path="deployments", times=1)
    kube_api.faults.drop_watches()
    scale(kube_api, "a", 1)
    await watcher_feed.wait_for(settled(watcher_feed, "a", replicas=1), timeout=15)
    assert metric("wva_watcher_watch_restarts_total", kind="deployment", reason="error") >= errors + 4


async def test_nats_outage_keeps_the_latest_state_and_publishes_it_on_return(
    nats_server: NatsServer, kube_api: KubeApiEmulator, watcher_service: StartWatcher, watcher_feed: Feed
) -> None:
    for name in ("a", "b"):
        kube_api.store.create("deployments", deployment(name, replicas=1), namespace="default")
        kube_api.store.create("variantautoscalings", va(name), namespace="default")
    watcher = await watcher_service()
    await watcher_feed.wait_for(settled(watcher_feed, "b", replicas=1))

    await asyncio.to_thread(nats_server.stop)  # off the loop: the cluster keeps changing meanwhile
    for replicas in (2, 3, 2):  # intermediate states that must not win
        scale(kube_api, "a", replicas)
        await asyncio.sleep(0.15)
    kube_api.store.delete("variantautoscalings", "default", "b")
    kube_api.store.create("deployments", deployment("c", replicas=1), namespace="default")
    kube_api.store.create("variantautoscalings", va("c"), namespace="default")
    await asyncio.sleep(0.5)
    await asyncio.to_thread(nats_server.start)

    async def converged() -> bool:
        state = await watcher_feed.stream_state()
        a, b, c = (state.get(("default", n)) for n in "abc")
        return (
            isinstance(a, Target) and a.spec_replicas == 2 and a.ready_replicas == 2 and len(a.pods) == 2
            and isinstance(b, TargetDeleted)
            and isinstance(c, Target) and c.resolved and c.ready_replicas == 1
        )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await converged():
        assert loop.time() < deadline, f"state never converged: {await watcher_feed.stream_state()}"
        await asyncio.sleep(0.2)
    assert not watcher.task.done()
    assert metric("wva_watcher_publish_failures_total") > 0


async def test_controller_instance_and_namespace_filtering(
    kube_api: KubeApiEmulator, watcher_service: StartWatcher, watcher_feed: Feed
) -> None:
    blue = {kube.CONTROLLER_INSTANCE_LABEL: "blue"}
    for ns in ("team-a", "team-b"):
        kube_api.store.create("deployments", deployment("d", replicas=1), namespace=ns)
        kube_api.store.create("variantautoscalings", va("mine", target="d", labels=blue), namespace=ns)
        kube_api.store.create("variantautoscalings", va("unlabelled", target="d"), namespace=ns)
        kube_api.store.create(
            "variantautoscalings", va("green", target="d", labels={kube.CONTROLLER_INSTANCE_LABEL: "green"}), namespace=ns
        )
    await watcher_service(controller_instance="blue", watch_namespaces=("team-a",))
    await watcher_feed.wait_for(settled(watcher_feed, "mine", replicas=1, namespace="team-a"))
    assert {(t.namespace, t.name) for t in watcher_feed.targets} == {("team-a", "mine")}
    assert watcher_feed.latest("mine", "team-a").controller_instance == "blue"  # type: ignore[union-attr]

    # Taking the label away hands the VA over: for this installation it is gone.
    kube_api.store.patch(
        "variantautoscalings", "team-a", "mine", {"metadata": {"labels": {kube.CONTROLLER_INSTANCE_LABEL: None}}}
    )
    await watcher_feed.wait_for(lambda: isinstance(watcher_feed.latest("mine", "team-a"), TargetDeleted))
    await watcher_feed.wait_for(lambda: watcher_feed.reasons("mine", "team-a") == ["va_deleted"])


async def test_restart_republishes_without_spurious_invalidations_and_catches_up(
    kube_api: KubeApiEmulator, watcher_service: StartWatcher, watcher_feed: Feed
) -> None:
    for name in ("a", "b"):
        kube_api.store.create("deployments", deployment(name, replicas=1), namespace="default")
        kube_api.store.create("variantautoscalings", va(name), namespace="default")
    first = await watcher_service()
    await watcher_feed.wait_for(settled(watcher_feed, "a", replicas=1))
    await watcher_feed.wait_for(settled(watcher_feed, "b", replicas=1))
    assert await first.stop() == 0

    watcher_feed.clear()
    second = await watcher_service()
    await watcher_feed.wait_for(lambda: watcher_feed.latest("a") and watcher_feed.latest("b"), what="republished")
    await asyncio.sleep(0.2)  # the first pass is acked before start() returns; give delivery a moment
    assert watcher_feed.invalidations == []
    assert await second.stop() == 0

    # A change while no watcher runs is invalidated precisely when the next one starts.
    watcher_feed.clear()
    scale(kube_api, "b", 2)
    await watcher_service()
    await watcher_feed.wait_for(settled(watcher_feed, "b", replicas=2))
    await watcher_feed.wait_for(lambda: watcher_feed.invalidations)
    await asyncio.sleep(0.2)  # anything spurious would have come with it
    assert [(i.name, i.reason) for i in watcher_feed.invalidations] == [("b", "replicas_changed")]
