"""What the watcher lists and watches: VariantAutoscalings, Deployments, ReplicaSets and Pods, through
the one list-then-watch loop of :mod:`shared.kubewatch`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from services.watcher import telemetry
from services.watcher.index import ObjectKind
from services.watcher.settings import WatcherSettings
from shared import kube
from shared.kubewatch import ListCall, ListWatch, Sink


@dataclass(frozen=True, slots=True)
class Resource:
    """A kind of object and the kubernetes-asyncio calls that list (and watch) it."""

    kind: ObjectKind
    list_all: ListCall
    list_namespaced: ListCall  # first positional argument: the namespace
    label_selector: str | None = None

    def call(self, namespace: str | None) -> ListCall:
        if namespace is None:
            return self.list_all

        async def namespaced(**kwargs: Any) -> Any:
            return await self.list_namespaced(namespace, **kwargs)

        return namespaced


def resources(api: client.ApiClient, *, va_label_selector: str | None) -> list[Resource]:
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)

    async def vas_all(**kwargs: Any) -> Any:
        return await custom.list_cluster_custom_object(kube.GROUP, kube.VERSION, kube.PLURAL, **kwargs)

    async def vas_in(namespace: str, **kwargs: Any) -> Any:
        return await custom.list_namespaced_custom_object(kube.GROUP, kube.VERSION, namespace, kube.PLURAL, **kwargs)

    return [
        Resource("va", vas_all, vas_in, va_label_selector),
        Resource("deployment", apps.list_deployment_for_all_namespaces, apps.list_namespaced_deployment),
        Resource("replicaset", apps.list_replica_set_for_all_namespaces, apps.list_namespaced_replica_set),
        Resource("pod", core.list_pod_for_all_namespaces, core.list_namespaced_pod),
    ]


def _count_restart(kind: str, reason: str) -> None:
    telemetry.WATCH_RESTARTS.labels(kind=kind, reason=reason).inc()


def watches(
    api: client.ApiClient,
    sink: Sink[ObjectKind],
    settings: WatcherSettings,
    *,
    namespaces: Sequence[str | None],
    va_label_selector: str | None,
) -> list[ListWatch[ObjectKind]]:
    """One list-then-watch per kind and namespace (None: all namespaces)."""
    return [
        ListWatch(
            resource.kind,
            resource.call(ns),
            ns,
            sink,
            label_selector=resource.label_selector,
            timeout_seconds=settings.watch_timeout,
            backoff_min=settings.watch_backoff_min,
            backoff_max=settings.watch_backoff_max,
            give_up_after=settings.watch_give_up,
            page_size=settings.list_page_size,
            on_restart=_count_restart,
        )
        for resource in resources(api, va_label_selector=va_label_selector)
        for ns in namespaces
    ]
