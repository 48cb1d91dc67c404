"""The PodRuntime of the emulated cluster: every pod of an inference Deployment is an emulated vLLM.

A pod says what it serves through annotations on its Deployment's pod template (see `pod_annotations`),
so a Deployment created by anyone — the cluster assembly, a test, `kubectl apply` — gets the right server,
and a pod without them serves nothing. `start` plays the container's boot: it waits `startup-seconds`
(weights loading; vLLM serves nothing meanwhile), then serves `/metrics` on 127.0.0.1 and returns the
port. The deployment controller marks the pod Ready afterwards. Pods started while `pre_existing` is set
(the ones a scenario begins with, until the cluster is first ready) were running before the story began:
they serve at once, as in the decision lab.

Readiness is taken from the pod objects themselves (`observe`, a store listener): only a pod whose Ready
condition is True is routed to and listed for Prometheus, which is what an inference gateway and
Kubernetes service discovery would do. A deleted pod leaves both at once, before its server stops.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from services.sandbox import filesd, queueing, vllm
from services.sandbox import router as routing
from services.sandbox.kubeapi import controller as kube_controller
from services.sandbox.kubeapi import resources as kube_resources
from services.sandbox.kubeapi.store import Change

log = logging.getLogger(__name__)

ANNOTATION_MODEL: Final = "sandbox.wva.llmd.ai/model"
ANNOTATION_SERVER: Final = "sandbox.wva.llmd.ai/server"
ANNOTATION_STARTUP: Final = "sandbox.wva.llmd.ai/startup-seconds"


def pod_annotations(
    *, model_id: str, params: queueing.ServerParams, startup_seconds: float
) -> dict[str, str]:
    """The pod-template annotations that make pods of a Deployment emulated vLLM replicas."""
    return {
        ANNOTATION_MODEL: model_id,
        ANNOTATION_SERVER: msgspec.json.encode(params).decode(),
        ANNOTATION_STARTUP: repr(float(startup_seconds)),
    }


@dataclass(frozen=True, kw_only=True)
class PodSpec:
    model_id: str
    params: queueing.ServerParams
    startup_seconds: float


def pod_spec(pod: dict[str, Any]) -> PodSpec | None:
    """What a pod serves, from its annotations; None if it is not an inference pod."""
    annotations = pod.get("metadata", {}).get("annotations") or {}
    model_id = annotations.get(ANNOTATION_MODEL)
    if not model_id:
        return None
    try:
        params = msgspec.json.decode(annotations.get(ANNOTATION_SERVER, "{}"), type=queueing.ServerParams)
        startup = float(annotations.get(ANNOTATION_STARTUP, "0"))
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        # A bad annotation is a crash-looping container in a real cluster: it never becomes a server.
        raise ValueError(f"pod {pod['metadata'].get('name')}: bad sandbox annotations: {exc}") from None
    return PodSpec(model_id=model_id, params=params, startup_seconds=max(0.0, startup))


@dataclass
class _Pod:
    uid: str
    server: vllm.EmulatedServer
    model_id: str


class VllmRuntime:
    """Implements kubeapi's `PodRuntime`; also a store listener (`observe`) for pod readiness."""

    def __init__(self, *, router: routing.Router, sd: filesd.FileSDWriter | None = None) -> None:
        self.router = router
        self.sd = sd
        self._pods: dict[routing.PodKey, _Pod] = {}
        self._ready: dict[routing.PodKey, str] = {}  # key -> uid of the pod the API says is Ready
        self.pre_existing = False  # pods started meanwhile skip their boot (Cluster sets it at first)

    # -- PodRuntime

    async def start(self, pod: dict[str, Any]) -> int | None:
        spec = pod_spec(pod)
        if spec is None:
            return None
        meta = pod["metadata"]
        key = routing.pod_key(meta["namespace"], meta["name"])
        # Boot time first, with nothing listening: cancellation here (pod deleted while booting) leaves
        # nothing behind.
        await asyncio.sleep(0.0 if self.pre_existing else spec.startup_seconds)
        server = vllm.EmulatedServer(model_id=spec.model_id, params=spec.params)
        port = await server.start()
        self._pods[key] = _Pod(uid=meta["uid"], server=server, model_id=spec.model_id)
        self.router.add(key, model_id=spec.model_id, backend=server)
        if self._ready.get(key) == meta["uid"]:
            self._publish(key, ready=True)
        log.info("pod %s serves %s on 127.0.0.1:%d", key, spec.model_id, port)
        return port

    async def stop(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        key = routing.pod_key(meta["namespace"], meta["name"])
        entry = self._pods.get(key)
        if entry is None or entry.uid != meta["uid"]:
            return
        self._publish(key, ready=False)
        self.router.remove(key)
        del self._pods[key]
        await entry.server.stop()
        log.info("pod %s stopped", key)

    async def close(self) -> None:
        """Stop every server still running (the controller normally stops them one by one)."""
        for key in list(self._pods):
            entry = self._pods.pop(key)
            self._publish(key, ready=False)
            self.router.remove(key)
            await entry.server.stop()

    # -- readiness, from the API's pod objects

    def observe(self, change: Change) -> None:
        if change.resource is not kube_resources.PODS:
            return
        pod = change.object
        meta = pod["metadata"]
        key = routing.pod_key(meta["namespace"], meta["name"])
        ready = change.type != "DELETED" and kube_controller.is_ready(pod)
        if ready:
            self._ready[key] = meta["uid"]
        else:
            self._ready.pop(key, None)
        entry = self._pods.get(key)
        if entry is not None and entry.uid == meta["uid"]:
            self._publish(key, ready=ready)

    def _publish(self, key: routing.PodKey, *, ready: bool) -> None:
        self.router.set_ready(key, ready)
        if self.sd is None:
            return
        namespace, name = key.split("/", 1)
        entry = self._pods.get(key)
        if ready and entry is not None and entry.server.port is not None:
            self.sd.put(
                filesd.ScrapeTarget(namespace=namespace, pod=name, address=f"127.0.0.1:{entry.server.port}")
            )
        else:
            self.sd.discard(namespace, name)

    # -- introspection (CLI, tests)

    def servers(self) -> dict[routing.PodKey, vllm.EmulatedServer]:
        return {key: entry.server for key, entry in self._pods.items()}

    def ready_pods(self) -> list[routing.PodKey]:
        return sorted(k for k in self._pods if k in self._ready)


__all__ = [
    "ANNOTATION_MODEL",
    "ANNOTATION_SERVER",
    "ANNOTATION_STARTUP",
    "PodSpec",
    "VllmRuntime",
    "pod_annotations",
    "pod_spec",
]
