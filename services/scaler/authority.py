"""The scaler's authority: which Deployment a VA may scale, and within which bounds, as the Kubernetes
API says — never as a message on NATS says.

The scaler takes *data* (targets, snapshots) from NATS, which anyone allowed to publish there could
forge. Before every PATCH the shell asks :meth:`Authority.refusal`, which answers from the scaler's own
list-then-watch of VariantAutoscalings: the VA exists and is managed by this installation, its spec has
no problems, its ``scaleTargetRef`` names this Deployment, no other VA names the same Deployment, and
the bounds the core used are the VA's. Anything else is refused, with a reason that names what
disagreed (and no secret: it is built from object names and numbers only).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

from kubernetes_asyncio import client

from services.scaler import telemetry
from services.scaler.actions import ScaleAction
from shared import kube
from shared.kubewatch import ListWatch
from shared.messages import VAKey, va_key
from shared.variantautoscaling import VariantAutoscaling, variant_autoscaling

log = logging.getLogger("wva.scaler.authority")

KIND: Final = "va"


class Authority:
    """VariantAutoscalings as the API has them (a list-then-watch sink) and the check before a PATCH."""

    def __init__(self) -> None:
        self._vas: dict[VAKey, VariantAutoscaling] = {}
        self._synced: set[str | None] = set()
        self.synced = asyncio.Event()
        self._expected: frozenset[str | None] = frozenset()

    def expect(self, namespaces: Sequence[str | None]) -> None:
        """Ready once every one of these namespaces (None: all) has been listed."""
        self._expected = frozenset(namespaces)

    # ------------------------------------------------------------------ sink

    def listed(self, kind: str, namespace: str | None, items: list[dict[str, Any]], *, expired: bool) -> None:
        for key in [k for k in self._vas if namespace is None or k[0] == namespace]:
            del self._vas[key]
        for obj in items:
            self._put(obj)
        self._synced.add(namespace)
        if self._synced >= self._expected:
            self.synced.set()

    def changed(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            meta = kube.metadata(obj)
            self._vas.pop(va_key(str(meta.get("namespace") or ""), str(meta.get("name") or "")), None)
        else:
            self._put(obj)

    def _put(self, obj: dict[str, Any]) -> None:
        va = variant_autoscaling(obj)
        if va.namespace and va.name:
            self._vas[va.key] = va

    # ------------------------------------------------------------------ the check

    def refusal(self, action: ScaleAction) -> str:
        """Why the API does not allow ``action`` ("" when it does)."""
        va = self._vas.get(va_key(action.namespace, action.name))
        if va is None:
            return f"no VariantAutoscaling {action.namespace}/{action.name} managed by this scaler in the API"
        if va.problems:
            return f"VariantAutoscaling {action.namespace}/{action.name} has an invalid spec ({va.problems[0].field})"
        if va.deployment != action.deployment:
            return (
                f"VariantAutoscaling {action.namespace}/{action.name} scales "
                f"{va.target_kind or 'nothing'} {va.target_name or ''}".rstrip()
                + f", not Deployment {action.deployment}"
            )
        others = sorted(
            other.name
            for other in self._vas.values()
            if other.namespace == va.namespace and other.name != va.name and other.deployment == va.deployment
        )
        if others:
            return f"Deployment {action.deployment} is also the scale target of VariantAutoscaling {', '.join(others)}"
        if (action.min_replicas, action.max_replicas) != (va.min_replicas, va.max_replicas):
            return (
                f"bounds [{action.min_replicas}, {_bound(action.max_replicas)}] differ from the "
                f"VariantAutoscaling's [{va.min_replicas}, {_bound(va.max_replicas)}]"
            )
        if action.replicas < va.min_replicas or (va.max_replicas is not None and action.replicas > va.max_replicas):
            return f"{action.replicas} replicas outside [{va.min_replicas}, {_bound(va.max_replicas)}]"
        return ""


def _bound(value: int | None) -> str:
    return "∞" if value is None else str(value)


def _count_restart(kind: str, reason: str) -> None:
    telemetry.WATCH_RESTARTS.labels(kind=kind, reason=reason).inc()


def watches(
    api: client.ApiClient, authority: Authority, *, namespaces: Sequence[str | None], label_selector: str
) -> list[ListWatch[str]]:
    """One list-then-watch of VariantAutoscalings per namespace (None: all) feeding ``authority``."""
    custom = client.CustomObjectsApi(api)
    authority.expect(namespaces)

    def call(namespace: str | None) -> Any:
        async def listing(**kwargs: Any) -> Any:
            if namespace is None:
                return await custom.list_cluster_custom_object(kube.GROUP, kube.VERSION, kube.PLURAL, **kwargs)
            return await custom.list_namespaced_custom_object(kube.GROUP, kube.VERSION, namespace, kube.PLURAL, **kwargs)

        return listing

    return [
        ListWatch(KIND, call(ns), ns, authority, label_selector=label_selector, on_restart=_count_restart)
        for ns in namespaces
    ]
