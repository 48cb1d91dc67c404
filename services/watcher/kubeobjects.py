"""Kubernetes objects as the watcher needs them: small frozen types built once, at the edge, from the
plain dicts the API returns (``raw_object`` of a watch event, or an item of a list).

Everything here is pure. VA validation happens during conversion, so an invalid VA becomes a value
with a ``problems`` list instead of an exception: the scaler reports those in the VA's conditions.

Conversion never raises on odd objects: a field of the wrong type is treated as absent (and, for a
VA, named in ``problems``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NewType

from shared import kube

ObjectKey = NewType("ObjectKey", tuple[str, str])  # (namespace, name) of any namespaced object

DEFAULT_METRICS_PORT: Final = 8000  # vLLM's default
PROMETHEUS_PORT_ANNOTATION: Final = "prometheus.io/port"
METRICS_PORT_NAMES: Final = ("metrics", "http")


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = kube.metadata(obj)
    return ObjectKey((str(meta.get("namespace") or ""), str(meta.get("name") or "")))


def resource_version(obj: Mapping[str, Any]) -> str:
    return str(kube.metadata(obj).get("resourceVersion") or "")


def controller_ref(obj: Mapping[str, Any], kind: str) -> str:
    """The uid of the object's controlling owner of ``kind``, or ""."""
    for ref in kube.metadata(obj).get("ownerReferences") or ():
        ref = kube.as_mapping(ref)
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("uid") or "")
    return ""


def template_hash(template: Any) -> str:
    """A stable digest of a Deployment's pod template: it changes exactly when the template does.

    It is wva's own hash (the Deployment object does not carry Kubernetes' ``pod-template-hash``;
    only its ReplicaSets do, and the new one may not exist yet when the template changes).
    """
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------ Deployment, ReplicaSet, Pod


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    namespace: str
    name: str
    uid: str
    generation: int
    template_hash: str
    spec_replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int

    @property
    def key(self) -> ObjectKey:
        return ObjectKey((self.namespace, self.name))


def deployment(obj: Mapping[str, Any]) -> Deployment:
    meta, spec, status = kube.metadata(obj), kube.as_mapping(obj.get("spec")), kube.as_mapping(obj.get("status"))
    replicas = kube.as_int(spec.get("replicas"))
    return Deployment(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        generation=kube.as_int(meta.get("generation")) or 0,
        template_hash=template_hash(spec.get("template")),
        spec_replicas=1 if replicas is None else replicas,  # the API's default
        ready_replicas=kube.as_int(status.get("readyReplicas")) or 0,
        updated_replicas=kube.as_int(status.get("updatedReplicas")) or 0,
        available_replicas=kube.as_int(status.get("availableReplicas")) or 0,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaSet:
    namespace: str
    name: str
    uid: str
    owner_uid: str  # the controlling Deployment's uid, or ""

    @property
    def key(self) -> ObjectKey:
        return ObjectKey((self.namespace, self.name))


def replica_set(obj: Mapping[str, Any]) -> ReplicaSet:
    meta = kube.metadata(obj)
    return ReplicaSet(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        owner_uid=controller_ref(obj, "Deployment"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Pod:
    namespace: str
    name: str
    uid: str
    owner_uid: str  # the controlling ReplicaSet's uid, or ""
    phase: str
    ready: bool
    address: str  # host:port of the metrics endpoint, "" until the pod has an IP
    terminating: bool

    @property
    def key(self) -> ObjectKey:
        return ObjectKey((self.namespace, self.name))

    @property
    def member(self) -> bool:
        """Whether the pod counts as a replica: not going away and not finished."""
        return not self.terminating and self.phase not in ("Succeeded", "Failed")


def metrics_port(obj: Mapping[str, Any]) -> int:
    """Annotation ``prometheus.io/port``, else a container port named ``metrics``, else ``http``, else 8000."""
    annotated = kube.string_map(kube.metadata(obj).get("annotations")).get(PROMETHEUS_PORT_ANNOTATION, "").strip()
    if annotated.isdigit() and 0 < int(annotated) < 65536:
        return int(annotated)
    named: dict[str, int] = {}
    for container in kube.as_mapping(obj.get("spec")).get("containers") or ():
        for port in kube.as_mapping(container).get("ports") or ():
            port = kube.as_mapping(port)
            number = kube.as_int(port.get("containerPort"))
            if number is not None and port.get("name") and str(port["name"]) not in named:
                named[str(port["name"])] = number
    for name in METRICS_PORT_NAMES:
        if name in named:
            return named[name]
    return DEFAULT_METRICS_PORT


def pod(obj: Mapping[str, Any]) -> Pod:
    meta, status = kube.metadata(obj), kube.as_mapping(obj.get("status"))
    ready = any(
        kube.as_mapping(c).get("type") == "Ready" and kube.as_mapping(c).get("status") == "True" for c in status.get("conditions") or ()
    )
    ip = str(status.get("podIP") or "")
    address = ""
    if ip:
        host = f"[{ip}]" if ":" in ip else ip
        address = f"{host}:{metrics_port(obj)}"
    return Pod(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        owner_uid=controller_ref(obj, "ReplicaSet"),
        phase=str(status.get("phase") or ""),
        ready=ready,
        address=address,
        terminating=bool(meta.get("deletionTimestamp")),
    )
