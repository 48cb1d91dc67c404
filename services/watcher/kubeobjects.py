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

from shared import kube, subjects
from shared.messages import Problem, VAKey, is_finite_non_negative, va_key

ObjectKey = NewType("ObjectKey", tuple[str, str])  # (namespace, name) of any namespaced object

DEFAULT_VARIANT_COST: Final = 10.0
DEFAULT_MIN_REPLICAS: Final = 1
DEFAULT_METRICS_PORT: Final = 8000  # vLLM's default
PROMETHEUS_PORT_ANNOTATION: Final = "prometheus.io/port"
METRICS_PORT_NAMES: Final = ("metrics", "http")


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _map(value).items()}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(obj.get("metadata"))


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = _meta(obj)
    return ObjectKey((str(meta.get("namespace") or ""), str(meta.get("name") or "")))


def resource_version(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("resourceVersion") or "")


def controller_ref(obj: Mapping[str, Any], kind: str) -> str:
    """The uid of the object's controlling owner of ``kind``, or ""."""
    for ref in _meta(obj).get("ownerReferences") or ():
        ref = _map(ref)
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


# ------------------------------------------------------------------------ VariantAutoscaling


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantAutoscaling:
    namespace: str
    name: str
    generation: int
    labels: Mapping[str, str]
    model_id: str
    variant_cost: float
    accelerator: str
    min_replicas: int
    max_replicas: int | None
    target_kind: str
    target_name: str
    target_api_version: str
    paused: bool
    dry_run: bool
    controller_instance: str
    problems: tuple[Problem, ...]

    @property
    def key(self) -> VAKey:
        return va_key(self.namespace, self.name)

    @property
    def deployment(self) -> ObjectKey | None:
        """The Deployment this VA scales, when its scale target is one (and names one)."""
        if self.target_kind != "Deployment" or not self.target_name:
            return None
        return ObjectKey((self.namespace, self.target_name))


def parse_variant_cost(raw: Any) -> tuple[float, Problem | None]:
    """``variantCost`` is a string holding a non-negative number ("10.0"); absent means 10.0.

    Returns the cost to publish (the default when invalid) and the problem, if any.
    """
    if raw is None:
        return DEFAULT_VARIANT_COST, None
    value: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):  # manifests written for old CRDs
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if is_finite_non_negative(value):
        return value, None
    return DEFAULT_VARIANT_COST, Problem(
        field="spec.variantCost", message=f"must be a non-negative number written as a string, got {raw!r}"
    )


def _flag(annotations: Mapping[str, str], key: str) -> bool:
    return annotations.get(key, "").strip().lower() in ("true", "1", "yes")


def variant_autoscaling(obj: Mapping[str, Any]) -> VariantAutoscaling:
    """Build a VA from its API dict, collecting what is wrong with its spec in ``problems``."""
    meta = _meta(obj)
    spec = _map(obj.get("spec"))
    labels = _str_map(meta.get("labels"))
    annotations = _str_map(meta.get("annotations"))
    problems: list[Problem] = []

    model_id = spec.get("modelID")
    if not isinstance(model_id, str) or not model_id.strip():
        problems.append(Problem(field="spec.modelID", message="is required and must be a non-empty string"))
        model_id = ""

    cost, cost_problem = parse_variant_cost(spec.get("variantCost"))
    if cost_problem is not None:
        problems.append(cost_problem)

    min_replicas = DEFAULT_MIN_REPLICAS
    if "minReplicas" in spec and spec["minReplicas"] is not None:
        parsed = _int(spec["minReplicas"])
        if parsed is None or parsed < 0:
            problems.append(
                Problem(field="spec.minReplicas", message=f"must be a non-negative integer, got {spec['minReplicas']!r}")
            )
        else:
            min_replicas = parsed
    max_replicas: int | None = None
    if spec.get("maxReplicas") is not None:
        parsed = _int(spec["maxReplicas"])
        if parsed is None or parsed < 1:
            problems.append(
                Problem(field="spec.maxReplicas", message=f"must be an integer of at least 1, got {spec['maxReplicas']!r}")
            )
        else:
            max_replicas = parsed
    if max_replicas is not None and min_replicas > max_replicas:
        problems.append(
            Problem(
                field="spec.minReplicas",
                message=f"minReplicas ({min_replicas}) is greater than maxReplicas ({max_replicas})",
            )
        )

    ref = spec.get("scaleTargetRef")
    target_kind = target_name = target_api_version = ""
    if not isinstance(ref, Mapping):
        problems.append(Problem(field="spec.scaleTargetRef", message="is required (kind Deployment and a name)"))
    else:
        target_kind = str(ref.get("kind") or "")
        target_name = str(ref.get("name") or "")
        target_api_version = str(ref.get("apiVersion") or "apps/v1")
        if target_kind != "Deployment":
            problems.append(
                Problem(
                    field="spec.scaleTargetRef.kind",
                    message=f"kind {target_kind!r} is not supported; the scale target must be a Deployment",
                )
            )
        elif target_api_version != "apps/v1":
            problems.append(
                Problem(
                    field="spec.scaleTargetRef.apiVersion",
                    message=f"apiVersion {target_api_version!r} is not supported; use apps/v1",
                )
            )
        if not target_name:
            problems.append(Problem(field="spec.scaleTargetRef.name", message="is required"))
        else:
            try:
                subjects.validate_name(target_name)
            except subjects.InvalidName:
                # No Deployment can have this name, and consumers refuse a target that carries one.
                problems.append(
                    Problem(field="spec.scaleTargetRef.name", message="is not a valid Deployment name (RFC 1123 subdomain)")
                )
                target_name = ""

    accelerator = labels.get(kube.ACCELERATOR_LABEL) or str(spec.get("acceleratorType") or "")
    return VariantAutoscaling(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        generation=_int(meta.get("generation")) or 0,
        labels=labels,
        model_id=model_id,
        variant_cost=cost,
        accelerator=accelerator,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_kind=target_kind,
        target_name=target_name,
        target_api_version=target_api_version,
        paused=_flag(annotations, kube.PAUSED_ANNOTATION),
        dry_run=_flag(annotations, kube.DRY_RUN_ANNOTATION),
        controller_instance=labels.get(kube.CONTROLLER_INSTANCE_LABEL, ""),
        problems=tuple(problems),
    )


def manages(labels: Mapping[str, str] | None, controller_instance: str | None) -> bool:
    """WVA_CONTROLLER_INSTANCE set: only VAs labelled with it; unset: only VAs without the label."""
    value = (labels or {}).get(kube.CONTROLLER_INSTANCE_LABEL)
    return value is None if not controller_instance else value == controller_instance


def va_label_selector(controller_instance: str | None) -> str:
    """The server-side form of :func:`manages`."""
    label = kube.CONTROLLER_INSTANCE_LABEL
    return f"{label}={controller_instance}" if controller_instance else f"!{label}"


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
    meta, spec, status = _meta(obj), _map(obj.get("spec")), _map(obj.get("status"))
    replicas = _int(spec.get("replicas"))
    return Deployment(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        generation=_int(meta.get("generation")) or 0,
        template_hash=template_hash(spec.get("template")),
        spec_replicas=1 if replicas is None else replicas,  # the API's default
        ready_replicas=_int(status.get("readyReplicas")) or 0,
        updated_replicas=_int(status.get("updatedReplicas")) or 0,
        available_replicas=_int(status.get("availableReplicas")) or 0,
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
    meta = _meta(obj)
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
    annotated = _str_map(_meta(obj).get("annotations")).get(PROMETHEUS_PORT_ANNOTATION, "").strip()
    if annotated.isdigit() and 0 < int(annotated) < 65536:
        return int(annotated)
    named: dict[str, int] = {}
    for container in _map(obj.get("spec")).get("containers") or ():
        for port in _map(container).get("ports") or ():
            port = _map(port)
            number = _int(port.get("containerPort"))
            if number is not None and port.get("name") and str(port["name"]) not in named:
                named[str(port["name"])] = number
    for name in METRICS_PORT_NAMES:
        if name in named:
            return named[name]
    return DEFAULT_METRICS_PORT


def pod(obj: Mapping[str, Any]) -> Pod:
    meta, status = _meta(obj), _map(obj.get("status"))
    ready = any(
        _map(c).get("type") == "Ready" and _map(c).get("status") == "True" for c in status.get("conditions") or ()
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
