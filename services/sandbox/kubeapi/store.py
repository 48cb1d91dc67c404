"""The object store: every object of the emulated cluster, one resourceVersion counter, a bounded
history of changes for watches, and in-process subscribers.

All methods are synchronous and run on the event loop's thread, so each write is atomic with respect
to readers and to the fan-out of its change; nothing here needs a lock. Stored objects are replaced,
never mutated, so a `Change` handed to a listener stays valid; listeners must treat it as read-only.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import json
import logging
import secrets
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.sandbox.kubeapi import errors, patching, resources
from services.sandbox.kubeapi import selectors as sel
from services.sandbox.kubeapi.resources import ResourceType
from services.sandbox.kubeapi.validation import Admission

log = logging.getLogger(__name__)

_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
ObjectKey = tuple[str, str, str]  # (resource key, namespace or "", name)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_NAME_SUFFIX_ALPHABET) for _ in range(length))


@dataclass(frozen=True, kw_only=True)
class Change:
    """One write, as a watch reports it. `old` is the object before a MODIFIED or DELETED."""

    type: str  # ADDED | MODIFIED | DELETED
    resource: ResourceType
    object: dict[str, Any]
    old: dict[str, Any] | None
    resource_version: int

    @property
    def namespace(self) -> str:
        return str(self.object["metadata"].get("namespace", ""))

    @property
    def name(self) -> str:
        return str(self.object["metadata"]["name"])


Listener = Callable[[Change], None]


class Subscription:
    """Changes after the moment of subscribing, as an async iterator; ends when closed."""

    def __init__(self, store: Store, resource: ResourceType | None, tag: str) -> None:
        self._store = store
        self.resource = resource
        self.tag = tag
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self.closed = False

    def _offer(self, change: Change) -> None:
        if not self.closed and (self.resource is None or self.resource is change.resource):
            self._queue.put_nowait(change)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)
            self._store._subscriptions.discard(self)

    def pending(self) -> int:
        return self._queue.qsize()

    def drain(self) -> list[Change]:
        """Every change already queued, without waiting (a closing sentinel is kept for `get`)."""
        out: list[Change] = []
        while not self._queue.empty():
            change = self._queue.get_nowait()
            if change is None:
                self._queue.put_nowait(None)
                break
            out.append(change)
        return out

    async def get(self) -> Change | None:
        """The next change, or None once closed."""
        if self.closed and self._queue.empty():
            return None
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[Change]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Change]:
        while (change := await self.get()) is not None:
            yield change


def _key(rtype: ResourceType, namespace: str | None, name: str) -> ObjectKey:
    return (rtype.key, namespace or "" if rtype.namespaced else "", name)


def _without(obj: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in fields}


class Store:
    def __init__(
        self,
        *,
        admission: Admission,
        history_limit: int = 1000,
        auto_create_namespaces: bool = True,
    ) -> None:
        self.admission = admission
        self.auto_create_namespaces = auto_create_namespaces
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        self._rv = 0
        self._history: deque[Change] = deque(maxlen=history_limit)
        # Watches from at or after this resourceVersion can be served from history; older ones get 410.
        self._compacted_rv = 0
        self._listeners: list[Listener] = []
        self._subscriptions: set[Subscription] = set()

    # ---- change feed -------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def compacted_resource_version(self) -> int:
        return self._compacted_rv

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` synchronously after every write; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def subscribe(self, resource: str | ResourceType | None = None, *, tag: str = "") -> Subscription:
        """Changes from now on (of one resource type, or all); close() the subscription when done.

        `tag` groups subscriptions so that `close_subscriptions(tag)` can end, say, only HTTP watches.
        """
        sub = Subscription(self, resources.resolve(resource) if resource is not None else None, tag)
        self._subscriptions.add(sub)
        return sub

    async def wait_for(self, predicate: Callable[[], bool], *, timeout_seconds: float = 5.0) -> None:
        """Return once `predicate()` holds, re-checking after every write; TimeoutError after the timeout."""
        changed = asyncio.Event()
        remove = self.add_listener(lambda _change: changed.set())
        try:
            async with asyncio.timeout(timeout_seconds):
                while not predicate():
                    changed.clear()
                    await changed.wait()
        finally:
            remove()

    def close_subscriptions(self, tag: str | None = None) -> int:
        subs = [s for s in self._subscriptions if tag is None or s.tag == tag]
        for sub in subs:
            sub.close()
        return len(subs)

    def history_since(self, resource_version: int, resource: ResourceType) -> list[Change]:
        if resource_version < self._compacted_rv:
            raise errors.expired(f"too old resource version: {resource_version} ({self._compacted_rv})")
        return [c for c in self._history if c.resource_version > resource_version and c.resource is resource]

    def compact(self) -> None:
        """Forget all history, as etcd compaction does: watches from any older version then get 410."""
        self._history.clear()
        self._compacted_rv = self._rv

    def _commit(self, kind: str, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = _key(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if kind == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        if self._history.maxlen is not None and len(self._history) == self._history.maxlen:
            self._compacted_rv = self._history[0].resource_version
        change = Change(type=kind, resource=rtype, object=obj, old=old, resource_version=self._rv)
        self._history.append(change)
        for sub in list(self._subscriptions):
            sub._offer(change)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("store listener failed on %s %s", kind, key)
        return obj

    # ---- reads -------------------------------------------------------------------------------

    def _stored(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._objects.get(_key(rtype, namespace, name))
        if obj is None:
            raise errors.not_found(rtype.plural, rtype.group, name)
        return obj

    def get(self, resource: str | ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        rtype = resources.resolve(resource)
        return copy.deepcopy(self._stored(rtype, namespace, name))

    def find(self, resource: str | ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object itself (read-only) or None; for in-process readers such as the controller."""
        return self._objects.get(_key(resources.resolve(resource), namespace, name))

    def iter_objects(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        *,
        label_selector: sel.LabelSelector | None = None,
        field_selector: sel.FieldSelector | None = None,
    ) -> Iterable[dict[str, Any]]:
        """Stored objects (read-only), sorted by namespace then name as the real server lists them."""
        rtype = resources.resolve(resource)
        keys = sorted(k for k in self._objects if k[0] == rtype.key and (not namespace or k[1] == namespace))
        for k in keys:
            obj = self._objects[k]
            if label_selector is not None and not label_selector.matches(obj["metadata"].get("labels")):
                continue
            if field_selector is not None and not field_selector.matches(obj):
                continue
            yield obj

    def list(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Copies of the matching objects and the resourceVersion to watch from."""
        items = self.iter_objects(
            resource,
            namespace,
            label_selector=sel.parse_label_selector(label_selector),
            field_selector=sel.parse_field_selector(field_selector),
        )
        return [copy.deepcopy(o) for o in items], self._rv

    # ---- writes ------------------------------------------------------------------------------

    def _ensure_namespace(self, rtype: ResourceType, namespace: str | None) -> None:
        if not rtype.namespaced:
            return
        if not namespace:
            raise errors.bad_request("the namespace of the object must be set")
        if self.find(resources.NAMESPACES, None, namespace) is not None:
            return
        if not self.auto_create_namespaces:
            raise errors.not_found("namespaces", "", namespace)
        self.create(resources.NAMESPACES, {"metadata": {"name": namespace}})

    def create(self, resource: str | ResourceType, obj: dict[str, Any], *, namespace: str | None = None) -> dict[str, Any]:
        rtype = resources.resolve(resource)
        if not isinstance(obj, dict):
            raise errors.bad_request("the body must be a JSON object")
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        body_ns = meta.get("namespace")
        if rtype.namespaced:
            if namespace and body_ns and body_ns != namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            namespace = namespace or body_ns
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{random_suffix()}"
        new["apiVersion"] = rtype.api_version
        new["kind"] = rtype.kind
        new = self.admission.default(rtype, new)
        self.admission.validate(rtype, new)
        if _key(rtype, namespace, meta["name"]) in self._objects:
            raise errors.already_exists(rtype.plural, rtype.group, meta["name"])
        self._ensure_namespace(rtype, namespace)
        for field in ("resourceVersion", "deletionTimestamp", "managedFields"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rtype.has_generation:
            meta["generation"] = 1
        if rtype is resources.NAMESPACES:
            new["status"] = {"phase": "Active"}
        return copy.deepcopy(self._commit("ADDED", rtype, new, None))

    def _replace(
        self, rtype: ResourceType, current: dict[str, Any], body: dict[str, Any], subresource: str | None
    ) -> dict[str, Any]:
        if subresource == "status":
            # Writes to /status change status only; everything else in the body is ignored.
            new = copy.deepcopy(current)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            else:
                new.pop("status", None)
        else:
            new = copy.deepcopy(body)
            if rtype.has_status:
                # With a status subresource, the main endpoint ignores status, as the real server does.
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
        meta = new.setdefault("metadata", {})
        cur_meta = current["metadata"]
        for field in ("name", "namespace", "uid", "creationTimestamp"):
            if field in cur_meta:
                meta[field] = cur_meta[field]
        meta.pop("generation", None)
        if rtype.has_generation:
            spec_changed = json.dumps(new.get("spec"), sort_keys=True) != json.dumps(current.get("spec"), sort_keys=True)
            meta["generation"] = cur_meta.get("generation", 1) + (1 if spec_changed else 0)
        new["apiVersion"] = rtype.api_version
        new["kind"] = rtype.kind
        new = self.admission.default(rtype, new)
        self.admission.validate(rtype, new)
        if _without(new, "metadata") == _without(current, "metadata") and _without(
            new["metadata"], "resourceVersion"
        ) == _without(cur_meta, "resourceVersion"):
            # A no-op write keeps its resourceVersion and emits no event, like the real server.
            return copy.deepcopy(current)
        return copy.deepcopy(self._commit("MODIFIED", rtype, new, current))

    def update(
        self,
        resource: str | ResourceType,
        obj: dict[str, Any],
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """PUT: replace the object; a stale metadata.resourceVersion is a 409 Conflict."""
        rtype = resources.resolve(resource)
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
            raise errors.bad_request("the body must be a JSON object")
        meta = obj.get("metadata") or {}
        name = name or meta.get("name")
        if not name:
            raise errors.bad_request("the name of the object must be set")
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        namespace = namespace or meta.get("namespace")
        if rtype.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        current = self._stored(rtype, namespace, name)
        expected = meta.get("resourceVersion")
        if expected and expected != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rtype.plural, rtype.group, name)
        return self._replace(rtype, current, obj, subresource)

    def patch(
        self,
        resource: str | ResourceType,
        namespace: str | None,
        name: str,
        body: bytes | dict[str, Any] | builtins.list[Any],
        *,
        content_type: str = patching.MERGE_PATCH,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        rtype = resources.resolve(resource)
        current = self._stored(rtype, namespace, name)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        patched = patching.apply(copy.deepcopy(current), raw, content_type)
        meta = patched.get("metadata")
        if not isinstance(meta, dict):
            raise errors.ApiError(422, "patch removed metadata")
        expected = meta.get("resourceVersion")
        if expected and expected != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rtype.plural, rtype.group, name)
        return self._replace(rtype, current, patched, subresource)

    def delete(
        self, resource: str | ResourceType, namespace: str | None, name: str, *, preconditions: Any = None
    ) -> dict[str, Any]:
        """DELETE; ``preconditions`` (of DeleteOptions) that do not hold are a 409 Conflict."""
        rtype = resources.resolve(resource)
        current = self._stored(rtype, namespace, name)
        for label, field in (("ResourceVersion", "resourceVersion"), ("UID", "uid")):
            wanted = preconditions.get(field) if isinstance(preconditions, dict) else None
            if wanted and wanted != current["metadata"].get(field):
                raise errors.precondition_failed(
                    rtype.plural, rtype.group, name, label, str(wanted), str(current["metadata"].get(field))
                )
        if rtype is resources.NAMESPACES:
            # Namespace deletion takes its contents with it (finalization is instant here).
            for key in [k for k in self._objects if k[1] == name and k[0] != rtype.key]:
                contained = self._objects[key]
                self.delete(key[0], name, contained["metadata"]["name"])
        gone = copy.deepcopy(current)
        gone["metadata"]["deletionTimestamp"] = now_rfc3339()
        return copy.deepcopy(self._commit("DELETED", rtype, gone, current))

    def delete_collection(
        self, resource: str | ResourceType, namespace: str | None, *, label_selector: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        rtype = resources.resolve(resource)
        victims = list(self.iter_objects(rtype, namespace, label_selector=sel.parse_label_selector(label_selector)))
        return [self.delete(rtype, o["metadata"].get("namespace"), o["metadata"]["name"]) for o in victims]
