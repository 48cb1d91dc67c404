"""VariantAutoscaling objects as wva reads them from the API: one small frozen type, built once at the
edge from the plain dict the API returns, with everything wrong about its spec in ``problems`` instead
of an exception. The watcher publishes it (as a ``Target``); the scaler's authority check reads it
straight from the API, so both read a VA the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared import kube, subjects
from shared.messages import Problem, VAKey, is_finite_non_negative, va_key

DEFAULT_VARIANT_COST: Final = 10.0
DEFAULT_MIN_REPLICAS: Final = 1


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
    def deployment(self) -> str | None:
        """The name of the Deployment this VA scales, when its scale target is one (and names one)."""
        if self.target_kind != "Deployment" or not self.target_name:
            return None
        return self.target_name


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
    meta = kube.metadata(obj)
    spec = kube.as_mapping(obj.get("spec"))
    labels = kube.string_map(meta.get("labels"))
    annotations = kube.string_map(meta.get("annotations"))
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
        parsed = kube.as_int(spec["minReplicas"])
        if parsed is None or parsed < 0:
            problems.append(
                Problem(field="spec.minReplicas", message=f"must be a non-negative integer, got {spec['minReplicas']!r}")
            )
        else:
            min_replicas = parsed
    max_replicas: int | None = None
    if spec.get("maxReplicas") is not None:
        parsed = kube.as_int(spec["maxReplicas"])
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
        generation=kube.as_int(meta.get("generation")) or 0,
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
