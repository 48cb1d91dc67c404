"""Build the ``Target`` message of one VA from the VA, its Deployment and the Deployment's pods (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from services.watcher import kubeobjects
from shared.messages import PodRef, ScaleTarget, Target
from shared.variantautoscaling import VariantAutoscaling


def build(
    va: VariantAutoscaling,
    deployment: kubeobjects.Deployment | None,
    pods: Iterable[kubeobjects.Pod],
    *,
    at: datetime,
) -> Target:
    """The VA's target; unresolved (``resolved=False``, no Deployment fields, no pods) without a Deployment."""
    d = deployment if va.deployment is not None else None
    members: tuple[PodRef, ...] = ()
    if d is not None:
        members = tuple(
            PodRef(name=p.name, ready=p.ready, phase=p.phase, address=p.address)
            for p in sorted(pods, key=lambda p: p.name)
            if p.member
        )
    return Target(
        namespace=va.namespace,
        name=va.name,
        at=at,
        model_id=va.model_id,
        variant_cost=va.variant_cost,
        accelerator=va.accelerator,
        min_replicas=va.min_replicas,
        max_replicas=va.max_replicas,
        scale_target=ScaleTarget(kind=va.target_kind, name=va.target_name, api_version=va.target_api_version),
        resolved=d is not None,
        deployment_generation=d.generation if d is not None else 0,
        template_hash=d.template_hash if d is not None else "",
        spec_replicas=d.spec_replicas if d is not None else 0,
        ready_replicas=d.ready_replicas if d is not None else 0,
        updated_replicas=d.updated_replicas if d is not None else 0,
        available_replicas=d.available_replicas if d is not None else 0,
        pods=members,
        va_generation=va.generation,
        paused=va.paused,
        dry_run=va.dry_run,
        controller_instance=va.controller_instance,
        problems=va.problems,
    )
