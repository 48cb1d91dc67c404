"""The resource types the emulated API server knows, and how names resolve to them."""

from __future__ import annotations

from dataclasses import dataclass, field

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, kw_only=True)
class ResourceType:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: frozenset[str] = field(default_factory=frozenset)
    # Only kinds with a spec the user edits get metadata.generation, as on a real API server.
    has_generation: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """`pods`, `deployments.apps`: the name kubectl accepts and the store indexes by."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


NAMESPACES = ResourceType(
    group="", version="v1", plural="namespaces", singular="namespace", kind="Namespace",
    namespaced=False, short_names=("ns",), subresources=frozenset({"status"}),
)
PODS = ResourceType(
    group="", version="v1", plural="pods", singular="pod", kind="Pod", namespaced=True,
    short_names=("po",), subresources=frozenset({"status"}),
)
EVENTS = ResourceType(
    group="", version="v1", plural="events", singular="event", kind="Event", namespaced=True,
    short_names=("ev",),
)
CONFIGMAPS = ResourceType(
    group="", version="v1", plural="configmaps", singular="configmap", kind="ConfigMap",
    namespaced=True, short_names=("cm",),
)
DEPLOYMENTS = ResourceType(
    group="apps", version="v1", plural="deployments", singular="deployment", kind="Deployment",
    namespaced=True, short_names=("deploy",), subresources=frozenset({"status", "scale"}),
    has_generation=True,
)
REPLICASETS = ResourceType(
    group="apps", version="v1", plural="replicasets", singular="replicaset", kind="ReplicaSet",
    namespaced=True, short_names=("rs",), subresources=frozenset({"status"}), has_generation=True,
)
LEASES = ResourceType(
    group="coordination.k8s.io", version="v1", plural="leases", singular="lease", kind="Lease",
    namespaced=True,
)
VARIANT_AUTOSCALINGS = ResourceType(
    group="llmd.ai", version="v1alpha1", plural="variantautoscalings", singular="variantautoscaling",
    kind="VariantAutoscaling", namespaced=True, short_names=("va",),
    subresources=frozenset({"status"}), has_generation=True,
)

ALL: tuple[ResourceType, ...] = (
    NAMESPACES, PODS, EVENTS, CONFIGMAPS, DEPLOYMENTS, REPLICASETS, LEASES, VARIANT_AUTOSCALINGS,
)

_BY_PATH = {(r.group, r.version, r.plural): r for r in ALL}


def by_path(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def group_versions() -> dict[str, list[str]]:
    """Group name -> served versions, core group under ``""``."""
    out: dict[str, list[str]] = {}
    for r in ALL:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def resolve(name: str | ResourceType) -> ResourceType:
    """Accept what a test would type: `pods`, `deployments.apps`, `deploy`, `Deployment`."""
    if isinstance(name, ResourceType):
        return name
    lowered = name.lower()
    for r in ALL:
        if lowered in (r.key, r.plural, r.singular, r.kind.lower(), *r.short_names):
            return r
    raise KeyError(f"unknown resource {name!r}")
