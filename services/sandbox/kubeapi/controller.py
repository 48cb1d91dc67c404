"""The deployment controller: Deployments own ReplicaSets (one per pod template), ReplicaSets own pods,
pods boot through a `PodRuntime` and turn Ready after a start-up delay; status flows back up.

A rollout is deliberately simple: the new ReplicaSet goes to the desired count at once and the old
ones to zero (no surge budget). Deleting an owner deletes what it owns (background propagation).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
from typing import Any

from services.sandbox.kubeapi import patching, resources
from services.sandbox.kubeapi.resources import DEPLOYMENTS, PODS, REPLICASETS
from services.sandbox.kubeapi.runtime import NullRuntime, PodRuntime
from services.sandbox.kubeapi.store import Change, Store, Subscription, now_rfc3339, random_suffix

log = logging.getLogger(__name__)

POD_TEMPLATE_HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
NODE_NAME = "wva-emulated-node"
POD_IP = "127.0.0.1"


def template_hash(template: dict[str, Any]) -> str:
    """Stable short hash of a pod template, in the alphabet Kubernetes uses for generated names."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).digest()
    n = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(10):
        n, r = divmod(n, len(_HASH_ALPHABET))
        chars.append(_HASH_ALPHABET[r])
    return "".join(chars)


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or []
    )


def _condition(type_: str, status: bool, *, reason: str = "", message: str = "") -> dict[str, Any]:
    now = now_rfc3339()
    cond: dict[str, Any] = {"type": type_, "status": "True" if status else "False", "lastTransitionTime": now}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _keep_transition_times(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reuse timestamps of conditions whose status and reason did not change, so status settles."""
    previous = {c["type"]: c for c in old}
    out = []
    for cond in new:
        prior = previous.get(cond["type"])
        if prior and prior.get("status") == cond["status"] and prior.get("reason") == cond.get("reason"):
            cond = {**cond, **{k: prior[k] for k in ("lastTransitionTime", "lastUpdateTime") if k in prior}}
        out.append(cond)
    return out


class DeploymentController:
    def __init__(self, store: Store, *, runtime: PodRuntime | None = None, startup_delay: float = 0.2) -> None:
        self.store = store
        self.runtime: PodRuntime = runtime or NullRuntime()
        self.startup_delay = startup_delay
        self._sub: Subscription | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._boots: dict[str, asyncio.Task[None]] = {}  # pod uid -> booting task
        self._started: dict[str, dict[str, Any]] = {}  # pod uid -> pod, for every pod given to runtime.start
        self._stops: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._sub = self.store.subscribe()
        for d in list(self.store.iter_objects(DEPLOYMENTS)):
            self.reconcile(d["metadata"]["namespace"], d["metadata"]["name"])
        self._loop_task = asyncio.create_task(self._run(self._sub), name="kubeapi-deployment-controller")

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
        tasks = [t for t in (self._loop_task, *self._boots.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._boots.clear()
        # Servers the runtime started must not outlive the emulated cluster.
        for pod in list(self._started.values()):
            self._stop_runtime(pod)
        self._started.clear()
        if self._stops:
            await asyncio.gather(*self._stops, return_exceptions=True)

    # ---- event loop ------------------------------------------------------------------------------

    async def _run(self, sub: Subscription) -> None:
        while (first := await sub.get()) is not None:
            deployments: set[tuple[str, str]] = set()
            collect = False
            for change in [first, *sub.drain()]:
                collect |= self._observe(change, deployments)
            if collect:
                self._collect_garbage()
            for ns, name in sorted(deployments):
                try:
                    self.reconcile(ns, name)
                except Exception:
                    log.exception("reconciling deployment %s/%s failed", ns, name)

    def _observe(self, change: Change, deployments: set[tuple[str, str]]) -> bool:
        """Note which deployments a change concerns; True if owners were deleted (garbage to collect)."""
        obj, ns = change.object, change.namespace
        if change.resource is DEPLOYMENTS:
            if change.type == "DELETED":
                return True
            deployments.add((ns, change.name))
        elif change.resource is REPLICASETS:
            if change.type == "DELETED":
                return True
            if (ref := controller_of(obj)) and ref["kind"] == "Deployment":
                deployments.add((ns, ref["name"]))
        elif change.resource is PODS:
            uid = obj["metadata"]["uid"]
            if change.type == "DELETED" and uid in self._started:
                if (boot := self._boots.pop(uid, None)) is not None:
                    boot.cancel()
                self._stop_runtime(self._started.pop(uid))
            if (ref := controller_of(obj)) and ref["kind"] == "ReplicaSet":
                rs = self.store.find(REPLICASETS, ns, ref["name"])
                if rs is not None and (dref := controller_of(rs)) and dref["kind"] == "Deployment":
                    deployments.add((ns, dref["name"]))
        return False

    def _stop_runtime(self, pod: dict[str, Any]) -> None:
        task = asyncio.create_task(self._call_stop(pod), name=f"kubeapi-pod-stop-{pod['metadata']['name']}")
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    async def _call_stop(self, pod: dict[str, Any]) -> None:
        try:
            await self.runtime.stop(copy.deepcopy(pod))
        except Exception:
            log.exception("runtime.stop failed for pod %s", pod["metadata"]["name"])

    def _collect_garbage(self) -> None:
        live = {o["metadata"]["uid"] for o in self.store.iter_objects(DEPLOYMENTS)}
        for rtype, owner_kind in ((REPLICASETS, "Deployment"), (PODS, "ReplicaSet")):
            for obj in list(self.store.iter_objects(rtype)):
                ref = controller_of(obj)
                if ref and ref["kind"] == owner_kind and ref["uid"] not in live:
                    self.store.delete(rtype, obj["metadata"]["namespace"], obj["metadata"]["name"])
            live = {o["metadata"]["uid"] for o in self.store.iter_objects(REPLICASETS)}

    # ---- reconciliation ----------------------------------------------------------------------------

    def _owned(self, rtype: resources.ResourceType, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
        return [
            o
            for o in self.store.iter_objects(rtype, namespace)
            if (ref := controller_of(o)) is not None and ref["uid"] == owner_uid
        ]

    def reconcile(self, namespace: str, name: str) -> None:
        deploy = self.store.find(DEPLOYMENTS, namespace, name)
        if deploy is None:
            return
        uid = deploy["metadata"]["uid"]
        spec = deploy["spec"]
        desired = int(spec.get("replicas", 1))
        pod_hash = template_hash(spec["template"])
        owned = self._owned(REPLICASETS, namespace, uid)
        new_rs = next((rs for rs in owned if rs["metadata"].get("labels", {}).get(POD_TEMPLATE_HASH) == pod_hash), None)
        if new_rs is None:
            new_rs = self._create_replicaset(deploy, pod_hash, owned)
            owned.append(new_rs)
        for rs in owned:
            target = desired if rs["metadata"]["uid"] == new_rs["metadata"]["uid"] else 0
            rs_name = rs["metadata"]["name"]
            if rs["spec"].get("replicas") != target:
                self.store.patch(REPLICASETS, namespace, rs_name, {"spec": {"replicas": target}})
            self._reconcile_pods(namespace, rs_name)
        self._update_deployment_status(namespace, name, new_rs["metadata"]["name"])

    def _create_replicaset(self, deploy: dict[str, Any], pod_hash: str, owned: list[dict[str, Any]]) -> dict[str, Any]:
        meta = deploy["metadata"]
        template = copy.deepcopy(deploy["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH] = pod_hash
        selector = copy.deepcopy(deploy["spec"]["selector"])
        selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH] = pod_hash
        revision = 1 + max((int(rs["metadata"].get("annotations", {}).get(REVISION, "0")) for rs in owned), default=0)
        rs = {
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "namespace": meta["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {REVISION: str(revision)},
                "ownerReferences": [owner_reference(deploy)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
            "status": {"replicas": 0, "observedGeneration": 1},
        }
        return self.store.create(REPLICASETS, rs)

    def _reconcile_pods(self, namespace: str, rs_name: str) -> None:
        rs = self.store.find(REPLICASETS, namespace, rs_name)
        if rs is None:
            return
        want = int(rs["spec"].get("replicas", 0))
        pods = self._owned(PODS, namespace, rs["metadata"]["uid"])
        for _ in range(want - len(pods)):
            pods.append(self._create_pod(rs))
        if len(pods) > want:
            # Like a ReplicaSet: delete pods that are not ready first, then the youngest.
            victims = sorted(pods, key=lambda p: (is_ready(p), _younger_first(p)))[: len(pods) - want]
            for pod in victims:
                self.store.delete(PODS, namespace, pod["metadata"]["name"])
            gone = {p["metadata"]["uid"] for p in victims}
            pods = [p for p in pods if p["metadata"]["uid"] not in gone]
        ready = sum(1 for p in pods if is_ready(self.store.find(PODS, namespace, p["metadata"]["name"]) or p))
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        if rs.get("status") != status:
            self.store.update(REPLICASETS, {**rs, "status": status}, subresource="status")

    def _create_pod(self, rs: dict[str, Any]) -> dict[str, Any]:
        template = rs["spec"]["template"]
        tmeta = template.get("metadata") or {}
        spec = copy.deepcopy(template.get("spec") or {})
        spec["nodeName"] = NODE_NAME
        spec.setdefault("restartPolicy", "Always")
        pod = {
            "metadata": {
                "name": f"{rs['metadata']['name']}-{random_suffix()}",
                "namespace": rs["metadata"]["namespace"],
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [owner_reference(rs)],
            },
            "spec": spec,
            "status": {
                "phase": "Pending",
                "conditions": [_condition("PodScheduled", True)],
                "qosClass": "BestEffort",
            },
        }
        created = self.store.create(PODS, pod)
        uid = created["metadata"]["uid"]
        self._started[uid] = created
        self._boots[uid] = asyncio.create_task(self._boot(created), name=f"kubeapi-pod-boot-{created['metadata']['name']}")
        return created

    async def _boot(self, pod: dict[str, Any]) -> None:
        ns, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]
        try:
            port = await self.runtime.start(copy.deepcopy(pod))
            current = self.store.find(PODS, ns, name)
            if current is None or current["metadata"]["uid"] != uid:
                return
            if port is not None:
                containers = copy.deepcopy(current["spec"]["containers"])
                ports = [p for p in containers[0].get("ports") or [] if p.get("name") != "metrics"]
                containers[0]["ports"] = [*ports, {"name": "metrics", "containerPort": port, "protocol": "TCP"}]
                patch = {
                    "metadata": {"annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(port)}},
                    "spec": {"containers": containers},
                }
                self.store.patch(PODS, ns, name, patch, content_type=patching.MERGE_PATCH)
            self._set_pod_status(ns, name, ready=False)
            await asyncio.sleep(self.startup_delay)
            current = self.store.find(PODS, ns, name)
            if current is not None and current["metadata"]["uid"] == uid:
                self._set_pod_status(ns, name, ready=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("booting pod %s/%s failed", ns, name)
        finally:
            self._boots.pop(uid, None)

    def _set_pod_status(self, namespace: str, name: str, *, ready: bool) -> None:
        pod = self.store.find(PODS, namespace, name)
        if pod is None:
            return
        started = (pod.get("status") or {}).get("startTime") or now_rfc3339()
        status = {
            "phase": "Running",
            "hostIP": POD_IP,
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": started,
            "qosClass": "BestEffort",
            "conditions": _keep_transition_times(
                (pod.get("status") or {}).get("conditions") or [],
                [
                    _condition("PodScheduled", True),
                    _condition("Initialized", True),
                    _condition("ContainersReady", ready),
                    _condition("Ready", ready),
                ],
            ),
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": ready,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": started}},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        self.store.update(PODS, {**pod, "status": status}, subresource="status")

    def _update_deployment_status(self, namespace: str, name: str, new_rs_name: str) -> None:
        deploy = self.store.find(DEPLOYMENTS, namespace, name)
        if deploy is None:
            return
        desired = int(deploy["spec"].get("replicas", 1))
        owned = self._owned(REPLICASETS, namespace, deploy["metadata"]["uid"])
        total = sum((rs.get("status") or {}).get("replicas", 0) for rs in owned)
        ready = sum((rs.get("status") or {}).get("readyReplicas", 0) for rs in owned)
        new_rs = next((rs for rs in owned if rs["metadata"]["name"] == new_rs_name), None)
        updated = (new_rs.get("status") or {}).get("replicas", 0) if new_rs else 0
        complete = updated == desired and total == desired and ready >= desired
        status: dict[str, Any] = {
            "observedGeneration": deploy["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        if total > ready:
            status["unavailableReplicas"] = total - ready
        conditions = [
            {**_condition(
                "Available", ready >= desired,
                reason="MinimumReplicasAvailable" if ready >= desired else "MinimumReplicasUnavailable",
                message="Deployment has minimum availability." if ready >= desired else "Deployment does not have minimum availability.",
            ), "lastUpdateTime": now_rfc3339()},
            {**_condition(
                "Progressing", True,
                reason="NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                message=f'ReplicaSet "{new_rs_name}" ' + ("has successfully progressed." if complete else "is progressing."),
            ), "lastUpdateTime": now_rfc3339()},
        ]
        old = deploy.get("status") or {}
        status["conditions"] = _keep_transition_times(old.get("conditions") or [], conditions)
        if old != status:
            self.store.update(DEPLOYMENTS, {**deploy, "status": status}, subresource="status")


def _younger_first(pod: dict[str, Any]) -> str:
    """Sort key that orders younger pods first (the timestamp's characters, inverted)."""
    meta = pod["metadata"]
    return "".join(chr(0x10FFFF - ord(c)) for c in str(meta["creationTimestamp"])) + str(meta["name"])
