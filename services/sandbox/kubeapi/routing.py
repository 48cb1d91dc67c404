"""Turn a request's method and path into what it asks for: a discovery document or a resource
operation, with the Kubernetes verb and a path pattern that requests are counted under.

Paths are parsed by hand rather than by aiohttp routes because `/api/v1/namespaces/x/status` (a
namespace's subresource) and `/api/v1/namespaces/x/pods` (pods in a namespace) only differ in whether
the fourth segment names a resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.sandbox.kubeapi import resources
from services.sandbox.kubeapi.resources import ResourceType

_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True, kw_only=True)
class Route:
    kind: str  # "discovery" | "resource" | "unknown"
    verb: str
    pattern: str
    group: str = ""
    version: str = ""
    resource: ResourceType | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def is_true(value: str | None) -> bool:
    """Query flags as clients send them: `true`, `1`, and Python's `True` from kubernetes-asyncio."""
    return value is not None and value.lower() in ("true", "1")


def _verb(method: str, *, has_name: bool, query: Mapping[str, str]) -> str:
    if method in ("GET", "HEAD"):
        if is_true(query.get("watch")):
            return "watch"
        return "get" if has_name else "list"
    if method == "DELETE":
        return "delete" if has_name else "deletecollection"
    return _METHOD_VERBS.get(method, method.lower())


def resolve(method: str, path: str, query: Mapping[str, str]) -> Route:
    segs = [s for s in path.split("/") if s]
    method = method.upper()
    unknown = Route(kind="unknown", verb=_verb(method, has_name=False, query=query), pattern=path)
    if not segs or segs[0] not in ("api", "apis"):
        return unknown
    if segs[0] == "api":
        if len(segs) <= 2:
            return Route(kind="discovery", verb="get", pattern=path, version=segs[1] if len(segs) == 2 else "")
        group, version, rest, prefix = "", segs[1], segs[2:], f"/api/{segs[1]}"
    else:
        if len(segs) <= 3:
            return Route(
                kind="discovery", verb="get", pattern=path,
                group=segs[1] if len(segs) > 1 else "", version=segs[2] if len(segs) > 2 else "",
            )
        group, version, rest, prefix = segs[1], segs[2], segs[3:], f"/apis/{segs[1]}/{segs[2]}"

    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        candidate = resources.by_path(group, version, rest[2])
        if candidate is not None and candidate.namespaced:
            namespace, rest = rest[1], rest[2:]
    rtype = resources.by_path(group, version, rest[0])
    if rtype is None or len(rest) > 3:
        return unknown
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    pattern = prefix + ("/namespaces/{namespace}" if namespace is not None else "") + f"/{rtype.plural}"
    if name is not None:
        pattern += "/{name}"
    if sub is not None:
        pattern += f"/{sub}"
    return Route(
        kind="resource",
        verb=_verb(method, has_name=name is not None, query=query),
        pattern=pattern,
        group=group,
        version=version,
        resource=rtype,
        namespace=namespace,
        name=name,
        subresource=sub,
    )
