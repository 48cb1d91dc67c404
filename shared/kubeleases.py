"""Leases in Kubernetes Lease objects (``coordination.k8s.io/v1``), the fallback where a NATS KV bucket is
not allowed (``WVA_LEASE_BACKEND=kubernetes``, docs/deployment.md "Several replicas").

One Lease per key in the service's namespace (``WVA_LEASE_NAMESPACE``), named from the key —
``scaler.3`` is ``wva-scaler-3``, ``members.scaler.<identity>`` is ``wva-members-scaler-<identity>`` —
and labelled ``app.kubernetes.io/part-of=wva`` and ``wva.llmd.ai/lease-service=<service>``, so one
list by label selector reads a service's keys. ``spec.holderIdentity`` is the value; the revision is
``metadata.resourceVersion``: an update is a replace carrying it (409 Conflict when another write came
first) and a delete carries it as a precondition.

Expiry without trusting clocks: Kubernetes never deletes a Lease, and the ``renewTime`` in it was
written by another machine's clock. As client-go's leader election does, a key counts as expired
when *this* replica has seen the same resourceVersion for a whole TTL of its own monotonic clock
(:class:`Observations`): its holder has not renewed for at least that long, so it stopped acting a
renewal period ago (fencing). An expired key is taken by replacing it with the resourceVersion that
was seen expire, so of two replicas taking it at once one gets 409. Expired member keys are not read
(the member is gone) and are deleted, with the same precondition, to keep the namespace tidy.

A renewal always changes ``renewTime``: the API server keeps the resourceVersion of a write that
changes nothing, and the others would see the lease expire.

Every request has a timeout of at most half a renewal period. A failure other than a conflict
(403 without the RBAC, 5xx, timeouts, a dropped connection) is raised as :class:`LeaseApiError`, whose
message says what happened without secrets — for 403, which RBAC is missing.

Exceptions::

    Exception
    ├── LeaseConflict (shared.leasestore)
    └── LeaseApiError    the API could not be used
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from shared import kube
from shared.leasestore import Entry, LeaseConflict, Revision, decode_value

log = logging.getLogger("wva.leases")

PART_OF_LABEL: Final = "app.kubernetes.io/part-of"
SERVICE_LABEL: Final = "wva.llmd.ai/lease-service"
_MEMBERS: Final = "members"
RBAC: Final = "coordination.k8s.io leases get, list, create, update, delete"


class LeaseApiError(Exception):
    """The Kubernetes API could not be used for a lease request (the message is safe to log)."""


def object_name(key: str) -> str:
    """The Lease of ``key``: ``scaler.3`` -> ``wva-scaler-3``, ``members.scaler.x-1`` ->
    ``wva-members-scaler-x-1`` (services, partitions and identities are DNS labels already)."""
    return "wva-" + key.replace(".", "-")


def key_of(name: str, service: str) -> str | None:
    """The key a Lease of ``service`` stands for (None: not a name wva gives)."""
    members, partition = f"wva-{_MEMBERS}-{service}-", f"wva-{service}-"
    if name.startswith(members):
        return f"{_MEMBERS}.{service}.{name[len(members):]}"
    if name.startswith(partition):
        return f"{service}.{name[len(partition):]}"
    return None


class Observations:
    """Which Leases this replica has seen unchanged for a whole TTL of its own clock — no I/O here."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._seen: dict[str, tuple[str, float]] = {}  # name -> (resourceVersion, first seen at)

    def see(self, name: str, revision: str, now: float) -> bool:
        """Record that ``name`` has ``revision`` at ``now``; True when it has had it for a TTL (expired)."""
        seen = self._seen.get(name)
        if seen is None or seen[0] != revision:
            self._seen[name] = (revision, now)
            return False
        return now - seen[1] >= self.ttl

    def expired(self, name: str, now: float) -> str | None:
        """The resourceVersion ``name`` was seen expire with (None: not expired, or never seen)."""
        seen = self._seen.get(name)
        return seen[0] if seen is not None and now - seen[1] >= self.ttl else None

    def keep_only(self, names: set[str]) -> None:
        """Forget the Leases a list no longer shows (deleted)."""
        for name in self._seen.keys() - names:
            del self._seen[name]


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # a MicroTime


class KubernetesLeaseStore:
    """:class:`shared.leasestore.LeaseStore` on Lease objects in ``namespace``."""

    def __init__(
        self, api: client.ApiClient, *, namespace: str, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.namespace = namespace
        self._api = client.CoordinationV1Api(api)
        self._ttl = ttl
        self._clock = clock
        self._timeout = min(2.0, ttl / 6)  # half a renewal period at most: a round must not overrun it
        self._seen = Observations(ttl)
        self._acquired: dict[str, str] = {}  # name -> acquireTime of the Leases this replica wrote

    async def ensure(self) -> None:
        """Nothing to create: Leases are objects of their own, and the namespace is the deployment's."""

    def failed(self, exc: Exception) -> None:
        """Nothing to forget: the next round reads everything again."""

    # ------------------------------------------------------------------ the operations

    async def create(self, key: str, value: str) -> Revision:
        name = object_name(key)
        stale = self._seen.expired(name, self._clock())
        self._acquired[name] = _now_rfc3339()
        if stale is not None:  # take the expired Lease over; of two takers one gets 409
            return await self._write(name, key, value, last=stale)
        try:
            obj = await self._call(
                self._api.create_namespaced_lease, self.namespace, self._body(name, key, value, None)
            )
        except ApiException as exc:
            if exc.status == 409:  # AlreadyExists
                raise LeaseConflict(key) from None
            raise self._error(exc) from None
        return self._written(name, obj)

    async def update(self, key: str, value: str, *, last: Revision) -> Revision:
        return await self._write(object_name(key), key, value, last=str(last))

    async def delete(self, key: str, *, last: Revision) -> None:
        name = object_name(key)
        options = {"preconditions": {"resourceVersion": str(last)}}
        try:
            await self._call(self._api.delete_namespaced_lease, name, self.namespace, body=options)
        except ApiException as exc:
            if exc.status == 404:
                return
            if exc.status == 409:  # written since: not ours to delete any more
                raise LeaseConflict(key) from None
            raise self._error(exc) from None
        self._acquired.pop(name, None)

    async def get(self, key: str) -> Entry | None:
        try:
            obj = await self._call(self._api.read_namespaced_lease, object_name(key), self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(exc) from None
        return Entry(key, _holder(obj), _revision(obj))

    async def read(self, service: str) -> dict[str, Entry]:
        try:
            body = await self._call(
                self._api.list_namespaced_lease, self.namespace,
                label_selector=f"{PART_OF_LABEL}=wva,{SERVICE_LABEL}={service}",
            )
        except ApiException as exc:
            raise self._error(exc) from None
        now = self._clock()
        entries: dict[str, Entry] = {}
        names: set[str] = set()
        gone: list[tuple[str, str]] = []
        for obj in body.get("items") or ():
            meta = kube.metadata(kube.as_mapping(obj))
            name, revision = str(meta.get("name") or ""), _revision(obj)
            key = key_of(name, service)
            if key is None or not revision:
                continue
            names.add(name)
            if self._seen.see(name, revision, now):
                if key.startswith(f"{_MEMBERS}."):
                    gone.append((key, revision))
                continue
            entries[key] = Entry(key, _holder(obj), revision)
        self._seen.keep_only(names)
        for key, revision in gone:  # tidying up is best effort: another replica may do it first
            with contextlib.suppress(LeaseConflict, LeaseApiError):
                await self.delete(key, last=revision)
        return entries

    # ------------------------------------------------------------------ helpers

    async def _write(self, name: str, key: str, value: str, *, last: str) -> Revision:
        try:
            obj = await self._call(
                self._api.replace_namespaced_lease, name, self.namespace, self._body(name, key, value, last)
            )
        except ApiException as exc:
            if exc.status in (404, 409):  # deleted, or written by another replica since `last`
                raise LeaseConflict(key) from None
            raise self._error(exc) from None
        return self._written(name, obj)

    def _written(self, name: str, obj: Mapping[str, Any]) -> str:
        revision = _revision(obj)
        self._seen.see(name, revision, self._clock())  # our own write: its age counts from now
        return revision

    def _body(self, name: str, key: str, value: str, last: str | None) -> dict[str, Any]:
        service = key.split(".")[1] if key.startswith(f"{_MEMBERS}.") else key.split(".")[0]
        metadata: dict[str, Any] = {
            "name": name, "namespace": self.namespace,
            "labels": {PART_OF_LABEL: "wva", SERVICE_LABEL: service},
        }
        if last is not None:
            metadata["resourceVersion"] = last
        renewed = _now_rfc3339()
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": {
                "holderIdentity": value, "leaseDurationSeconds": math.ceil(self._ttl),
                "acquireTime": self._acquired.get(name, renewed), "renewTime": renewed,
            },
        }

    async def _call(self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One request with this store's timeout, its answer as a dict; connection trouble and timeouts
        become :class:`LeaseApiError`, API answers stay :class:`ApiException` for the caller to sort."""
        try:
            response = await method(*args, **kwargs, _preload_content=False, _request_timeout=self._timeout)
            return await kube.read_json(response)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise LeaseApiError(f"Kubernetes API: {kube.describe(exc)}") from None

    def _error(self, exc: ApiException) -> LeaseApiError:
        if exc.status == 403:
            return LeaseApiError(
                f"Kubernetes API: {kube.describe(exc)}: this service account needs RBAC for {RBAC} in "
                f"namespace {self.namespace} (deploy/overlays/kubernetes-leases grants it)"
            )
        return LeaseApiError(f"Kubernetes API: {kube.describe(exc)}")


def _revision(obj: Any) -> str:
    return str(kube.metadata(kube.as_mapping(obj)).get("resourceVersion") or "")


def _holder(obj: Any) -> str | None:
    """``spec.holderIdentity`` if it is a replica identity (anything else is counted and held by nobody)."""
    holder = kube.as_mapping(kube.as_mapping(obj).get("spec")).get("holderIdentity")
    return decode_value(holder.encode() if isinstance(holder, str) else None)
