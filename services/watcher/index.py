"""The in-memory cluster index: managed VAs, Deployments, ReplicaSets and Pods, and the owner chains
pod -> ReplicaSet -> Deployment (by uid), so that the target of a VA can be rebuilt in O(its pods).

Every write returns the keys of the VAs whose target may have changed; the reconciler rebuilds only
those. Pure and synchronous: watch loops call it from the event loop, one event at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal, TypeAlias

from services.watcher import kubeobjects, targets
from services.watcher.kubeobjects import ObjectKey
from shared.messages import Target, VAKey
from shared.variantautoscaling import VariantAutoscaling, manages, variant_autoscaling

ObjectKind = Literal["va", "deployment", "replicaset", "pod"]
KINDS: tuple[ObjectKind, ...] = ("va", "deployment", "replicaset", "pod")
Info: TypeAlias = VariantAutoscaling | kubeobjects.Deployment | kubeobjects.ReplicaSet | kubeobjects.Pod


def convert(kind: ObjectKind, obj: Mapping[str, Any]) -> Info:
    """The one place where a Kubernetes dict becomes our type."""
    if kind == "va":
        return variant_autoscaling(obj)
    if kind == "deployment":
        return kubeobjects.deployment(obj)
    if kind == "replicaset":
        return kubeobjects.replica_set(obj)
    return kubeobjects.pod(obj)


class ClusterIndex:
    def __init__(self, *, controller_instance: str | None = None) -> None:
        self.controller_instance = controller_instance
        self.vas: dict[VAKey, VariantAutoscaling] = {}
        self.deployments: dict[ObjectKey, kubeobjects.Deployment] = {}
        self.replicasets: dict[ObjectKey, kubeobjects.ReplicaSet] = {}
        self.pods: dict[ObjectKey, kubeobjects.Pod] = {}
        self._vas_by_deployment: defaultdict[ObjectKey, set[VAKey]] = defaultdict(set)
        self._deployment_by_uid: dict[str, ObjectKey] = {}
        self._rs_by_uid: dict[str, ObjectKey] = {}
        self._rs_by_owner: defaultdict[str, set[ObjectKey]] = defaultdict(set)
        self._pods_by_owner: defaultdict[str, set[ObjectKey]] = defaultdict(set)

    # ---------------------------------------------------------------- writes

    def upsert(self, kind: ObjectKind, info: Info) -> set[VAKey]:
        return self._put(kind, info.namespace, info.name, info)

    def delete(self, kind: ObjectKind, namespace: str, name: str) -> set[VAKey]:
        return self._put(kind, namespace, name, None)

    def replace(self, kind: ObjectKind, namespace: str | None, infos: Iterable[Info]) -> set[VAKey]:
        """Make the index hold exactly ``infos`` for ``kind`` in ``namespace`` (None: all), as after a list."""
        fresh = {(i.namespace, i.name): i for i in infos}
        affected: set[VAKey] = set()
        for key in [k for k in self._table(kind) if (namespace is None or k[0] == namespace) and k not in fresh]:
            affected |= self.delete(kind, *key)
        for info in fresh.values():
            affected |= self.upsert(kind, info)
        return affected

    def _table(self, kind: ObjectKind) -> dict[Any, Any]:
        tables: dict[ObjectKind, dict[Any, Any]] = {
            "va": self.vas,
            "deployment": self.deployments,
            "replicaset": self.replicasets,
            "pod": self.pods,
        }
        return tables[kind]

    def _put(self, kind: ObjectKind, namespace: str, name: str, info: Info | None) -> set[VAKey]:
        key = ObjectKey((namespace, name))
        if kind == "va":
            assert info is None or isinstance(info, VariantAutoscaling)
            return self._put_va(VAKey(key), info)
        if kind == "deployment":
            assert info is None or isinstance(info, kubeobjects.Deployment)
            return self._put_deployment(key, info)
        if kind == "replicaset":
            assert info is None or isinstance(info, kubeobjects.ReplicaSet)
            return self._put_replicaset(key, info)
        assert info is None or isinstance(info, kubeobjects.Pod)
        return self._put_pod(key, info)

    def _put_va(self, key: VAKey, va: VariantAutoscaling | None) -> set[VAKey]:
        if va is not None and not manages(va.labels, self.controller_instance):
            va = None  # no longer ours: for this installation it is as good as deleted
        old = self.vas.pop(key, None)
        old_deployment = _deployment_of(old)
        if old_deployment is not None:
            self._vas_by_deployment[old_deployment].discard(key)
            if not self._vas_by_deployment[old_deployment]:
                del self._vas_by_deployment[old_deployment]
        if va is not None:
            self.vas[key] = va
            deployment = _deployment_of(va)
            if deployment is not None:
                self._vas_by_deployment[deployment].add(key)
        return {key} if old is not None or va is not None else set()

    def _put_deployment(self, key: ObjectKey, d: kubeobjects.Deployment | None) -> set[VAKey]:
        old = self.deployments.pop(key, None)
        if old is not None:
            self._deployment_by_uid.pop(old.uid, None)
        if d is not None:
            self.deployments[key] = d
            self._deployment_by_uid[d.uid] = key
        return set(self._vas_by_deployment.get(key, ()))

    def _put_replicaset(self, key: ObjectKey, rs: kubeobjects.ReplicaSet | None) -> set[VAKey]:
        old = self.replicasets.pop(key, None)
        affected: set[VAKey] = set()
        if old is not None:
            self._rs_by_uid.pop(old.uid, None)
            self._unlink(self._rs_by_owner, old.owner_uid, key)
            affected |= self._vas_of_deployment_uid(old.owner_uid)
        if rs is not None:
            self.replicasets[key] = rs
            self._rs_by_uid[rs.uid] = key
            if rs.owner_uid:
                self._rs_by_owner[rs.owner_uid].add(key)
            affected |= self._vas_of_deployment_uid(rs.owner_uid)
        return affected

    def _put_pod(self, key: ObjectKey, p: kubeobjects.Pod | None) -> set[VAKey]:
        old = self.pods.pop(key, None)
        affected: set[VAKey] = set()
        if old is not None:
            self._unlink(self._pods_by_owner, old.owner_uid, key)
            affected |= self._vas_of_rs_uid(old.owner_uid)
        if p is not None:
            self.pods[key] = p
            if p.owner_uid:
                self._pods_by_owner[p.owner_uid].add(key)
            affected |= self._vas_of_rs_uid(p.owner_uid)
        return affected

    @staticmethod
    def _unlink(links: defaultdict[str, set[ObjectKey]], owner: str, key: ObjectKey) -> None:
        if owner and owner in links:
            links[owner].discard(key)
            if not links[owner]:
                del links[owner]

    def _vas_of_deployment_uid(self, uid: str) -> set[VAKey]:
        key = self._deployment_by_uid.get(uid) if uid else None
        return set(self._vas_by_deployment.get(key, ())) if key is not None else set()

    def _vas_of_rs_uid(self, uid: str) -> set[VAKey]:
        key = self._rs_by_uid.get(uid) if uid else None
        rs = self.replicasets.get(key) if key is not None else None
        return self._vas_of_deployment_uid(rs.owner_uid) if rs is not None else set()

    # ---------------------------------------------------------------- reads

    def vas_in(self, namespace: str | None) -> set[VAKey]:
        return {k for k in self.vas if namespace is None or k[0] == namespace}

    def pods_of(self, d: kubeobjects.Deployment) -> list[kubeobjects.Pod]:
        found: list[kubeobjects.Pod] = []
        for rs_key in self._rs_by_owner.get(d.uid, ()):
            rs = self.replicasets[rs_key]
            found.extend(self.pods[k] for k in self._pods_by_owner.get(rs.uid, ()))
        return found

    def target(self, key: VAKey, *, at: datetime) -> Target | None:
        """The current target of a managed VA, or None when there is no such VA."""
        va = self.vas.get(key)
        if va is None:
            return None
        deployment = _deployment_of(va)
        d = self.deployments.get(deployment) if deployment is not None else None
        return targets.build(va, d, self.pods_of(d) if d is not None else (), at=at)


def _deployment_of(va: VariantAutoscaling | None) -> ObjectKey | None:
    """The key of the Deployment a VA scales, when it names one."""
    if va is None or va.deployment is None:
        return None
    return ObjectKey((va.namespace, va.deployment))
