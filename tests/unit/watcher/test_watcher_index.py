"""The cluster index follows owner chains whatever order objects arrive in; the reconciler turns index
changes into the right messages (first pass against a baseline, re-lists, deletions)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec

from services.watcher.index import ClusterIndex, convert
from services.watcher.publishing import Outbox
from services.watcher.reconciling import Reconciler
from shared import kube
from shared.messages import Invalidation, Target, TargetDeleted, VAKey
from shared.subjects import Subjects

AT = datetime(2025, 1, 1, tzinfo=UTC)
KEY = VAKey(("llm", "v"))


def va(name: str = "v", *, target: str = "d", cost: str = "10.0", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "llm", "generation": 1, "labels": labels or {}},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": target}, "modelID": "m", "variantCost": cost},
    }


def deployment(name: str = "d", *, uid: str = "d-uid", replicas: int = 2, image: str = "i:1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "llm", "uid": uid, "generation": 1},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"image": image}]}}},
    }


def rs(name: str = "d-1", *, uid: str = "rs-uid", owner: str = "d-uid") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "llm",
            "uid": uid,
            "ownerReferences": [{"kind": "Deployment", "uid": owner, "name": "d", "controller": True}],
        }
    }


def pod(name: str, *, owner: str = "rs-uid", ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "llm",
            "uid": f"{name}-uid",
            "ownerReferences": [{"kind": "ReplicaSet", "uid": owner, "name": "d-1", "controller": True}],
        },
        "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": str(ready)}]},
    }


def pods_of(index: ClusterIndex) -> list[str]:
    t = index.target(KEY, at=AT)
    assert t is not None
    return [p.name for p in t.pods]


def test_pods_found_whatever_order_the_owner_chain_arrives_in() -> None:
    index = ClusterIndex()
    # Pod first, then its ReplicaSet, then the Deployment, then the VA: nothing is lost.
    assert index.upsert("pod", convert("pod", pod("p1"))) == set()
    assert index.upsert("replicaset", convert("replicaset", rs())) == set()
    assert index.upsert("deployment", convert("deployment", deployment())) == set()
    assert index.upsert("va", convert("va", va())) == {KEY}
    assert pods_of(index) == ["p1"]
    # Every later link now points at the VA.
    assert index.upsert("pod", convert("pod", pod("p2"))) == {KEY}
    assert index.upsert("replicaset", convert("replicaset", rs("d-2", uid="rs2", owner="d-uid"))) == {KEY}
    assert index.upsert("pod", convert("pod", pod("p3", owner="rs2"))) == {KEY}
    assert pods_of(index) == ["p1", "p2", "p3"]
    assert index.delete("pod", "llm", "p1") == {KEY}
    assert pods_of(index) == ["p2", "p3"]


def test_a_foreign_deployments_pods_do_not_leak_in() -> None:
    index = ClusterIndex()
    for kind, obj in [("va", va()), ("deployment", deployment()), ("replicaset", rs()), ("pod", pod("p1"))]:
        index.upsert(kind, convert(kind, obj))  # type: ignore[arg-type]
    index.upsert("deployment", convert("deployment", deployment("other", uid="o-uid")))
    index.upsert("replicaset", convert("replicaset", rs("other-1", uid="ors", owner="o-uid")))
    assert index.upsert("pod", convert("pod", pod("x", owner="ors"))) == set()
    assert pods_of(index) == ["p1"]


def test_replace_deletes_what_a_list_no_longer_has() -> None:
    index = ClusterIndex()
    index.upsert("va", convert("va", va()))
    index.upsert("va", convert("va", va("w")))
    affected = index.replace("va", "llm", [convert("va", va("w", cost="2"))])
    assert affected == {KEY, VAKey(("llm", "w"))}
    assert set(index.vas) == {VAKey(("llm", "w"))}


def test_a_va_that_changes_controller_instance_leaves_the_index() -> None:
    index = ClusterIndex(controller_instance=None)
    index.upsert("va", convert("va", va()))
    assert index.upsert("va", convert("va", va(labels={kube.CONTROLLER_INSTANCE_LABEL: "blue"}))) == {KEY}
    assert index.target(KEY, at=AT) is None


# ------------------------------------------------------------------------------- reconciler


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, msgspec.Struct]] = []

    async def __call__(self, subject: str, message: msgspec.Struct, msg_id: str) -> None:
        self.sent.append((subject, message))

    def invalidations(self) -> list[tuple[str, str]]:
        return [(m.name, m.reason) for _, m in self.sent if isinstance(m, Invalidation)]

    def targets(self) -> list[Target | TargetDeleted]:
        return [m for _, m in self.sent if isinstance(m, (Target, TargetDeleted))]


async def run_pass(reconciler: Reconciler, outbox: Outbox) -> None:
    reconciler.reconcile()
    task = asyncio.create_task(outbox.run())
    await asyncio.wait_for(outbox.wait_idle(), 2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def listed_cluster(reconciler: Reconciler, *, replicas: int = 2, vas: list[dict[str, Any]] | None = None) -> None:
    reconciler.listed("va", None, vas if vas is not None else [va()], expired=False)
    reconciler.listed("deployment", None, [deployment(replicas=replicas)], expired=False)
    reconciler.listed("replicaset", None, [rs()], expired=False)
    reconciler.listed("pod", None, [pod("p1")], expired=False)


def make(baseline: dict[VAKey, Target] | None) -> tuple[Reconciler, Outbox, Recorder]:
    rec = Recorder()
    outbox = Outbox(rec)
    streams = [(k, None) for k in ("va", "deployment", "replicaset", "pod")]
    return Reconciler(ClusterIndex(), outbox, Subjects(), streams=streams, baseline=baseline), outbox, rec  # type: ignore[misc]


async def test_first_pass_against_an_identical_baseline_republishes_without_invalidations() -> None:
    first, outbox, rec = make({})
    listed_cluster(first)
    await run_pass(first, outbox)
    (published,) = rec.targets()
    assert isinstance(published, Target) and published.resolved and [p.name for p in published.pods] == ["p1"]
    assert rec.invalidations() == []

    # A restart: the stream holds what the first run published; the cluster is unchanged.
    again, outbox2, rec2 = make(dict(first.published))
    listed_cluster(again)
    await run_pass(again, outbox2)
    assert len(rec2.targets()) == 1  # republished: consumers treat it as a no-op
    assert rec2.invalidations() == []


async def test_changes_while_away_are_invalidated_precisely_on_restart() -> None:
    first, outbox, _ = make({})
    listed_cluster(first, vas=[va(), va("gone")])
    await run_pass(first, outbox)

    again, outbox2, rec2 = make(dict(first.published))
    listed_cluster(again, replicas=5)  # scaled while the watcher was down, and "gone" was deleted
    await run_pass(again, outbox2)
    assert sorted(rec2.invalidations()) == [("gone", "va_deleted"), ("v", "replicas_changed")]
    assert any(isinstance(m, TargetDeleted) and m.name == "gone" for m in rec2.targets())


async def test_without_a_baseline_every_va_gets_relist() -> None:
    reconciler, outbox, rec = make(None)
    listed_cluster(reconciler)
    await run_pass(reconciler, outbox)
    assert rec.invalidations() == [("v", "relist")]


async def test_an_expired_relist_invalidates_every_va_in_scope_and_finds_deletions() -> None:
    reconciler, outbox, rec = make({})
    listed_cluster(reconciler, vas=[va(), va("w")])
    await run_pass(reconciler, outbox)
    rec.sent.clear()
    reconciler.listed("va", None, [va()], expired=True)  # "w" was deleted during the gap
    await run_pass(reconciler, outbox)
    assert sorted(rec.invalidations()) == [("v", "relist"), ("w", "va_deleted")]


async def test_watch_events_publish_only_on_content_change() -> None:
    reconciler, outbox, rec = make({})
    listed_cluster(reconciler)
    await run_pass(reconciler, outbox)
    rec.sent.clear()
    reconciler.changed("pod", "MODIFIED", pod("p1"))  # same content
    await run_pass(reconciler, outbox)
    assert rec.sent == []
    reconciler.changed("deployment", "MODIFIED", deployment(image="i:2"))
    await run_pass(reconciler, outbox)
    assert rec.invalidations() == [("v", "template_changed")]
    (t,) = rec.targets()
    # Target first, then its invalidation: a consumer that refetches sees the new target.
    assert isinstance(rec.sent[0][1], Target)
    assert isinstance(t, Target)
