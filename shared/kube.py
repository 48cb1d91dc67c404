"""Kubernetes access: a kubernetes-asyncio client factory, the VariantAutoscaling constants, and the one
transient-error policy every caller of the API uses.

Transient (retried with bounded, jittered backoff): 409 Conflict (an update raced another writer),
410 Gone (a list's continue token expired: list again), 429, 5xx, and every connection-level failure
of the client libraries — ``aiohttp.ClientError`` (``ServerDisconnectedError``, ``ClientPayloadError``
are not ``OSError``), ``OSError``, timeouts. Anything else (401, 403, 404, 422, …) needs a person and is
raised at once. Every request carries a timeout (:data:`REQUEST_TIMEOUT`), so a hung API server costs
a bounded wait, never a stuck task.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTResponse

GROUP: Final = "llmd.ai"
VERSION: Final = "v1alpha1"
PLURAL: Final = "variantautoscalings"
KIND: Final = "VariantAutoscaling"
API_VERSION: Final = f"{GROUP}/{VERSION}"

ACCELERATOR_LABEL: Final = "inference.optimization/acceleratorName"
CONTROLLER_INSTANCE_LABEL: Final = "wva.llmd.ai/controller-instance"
PAUSED_ANNOTATION: Final = "wva.llmd.ai/paused"
DRY_RUN_ANNOTATION: Final = "wva.llmd.ai/dry-run"

# (connect, total) seconds for a plain request; kubernetes-asyncio passes it to aiohttp.
REQUEST_TIMEOUT: Final = (5.0, 15.0)
TRANSIENT_STATUSES: Final = frozenset({409, 410, 429})


def is_transient(exc: BaseException) -> bool:
    """Worth retrying after a backoff (see the module docstring); everything else needs a person."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        return status in TRANSIENT_STATUSES or status >= 500
    return isinstance(exc, (aiohttp.ClientError, OSError, asyncio.TimeoutError))


def retry_after(exc: BaseException | None) -> float:
    """Seconds the server asked us to wait (``Retry-After`` of a 429/503), 0 when it did not say."""
    headers: Mapping[str, str] | None = getattr(exc, "headers", None) if isinstance(exc, ApiException) else None
    value = (headers or {}).get("Retry-After", "")
    return float(value) if value.strip().isdigit() else 0.0


def describe(exc: BaseException | None) -> str:
    """A short, secret-free description of an API failure for logs and conditions."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    if exc is None:
        return "unknown error"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    return type(exc).__name__


async def read_json(response: Any) -> dict[str, Any]:
    """Read a raw (``_preload_content=False``) response; raise ApiException for a non-2xx status or a
    body that is not a JSON object (an untrusted answer never escapes as another exception type)."""
    try:
        data = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=RESTResponse(response, data))  # type: ignore[arg-type]  # what rest.py passes too
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise ApiException(status=502, reason="response is not JSON") from None
    if not isinstance(body, dict):
        raise ApiException(status=502, reason="response is not a JSON object")
    return body


async def api_client(kubeconfig: str | None = None, *, long_lived_connections: int = 0) -> client.ApiClient:
    """A client from ``kubeconfig`` (or ``$KUBECONFIG``), or the in-cluster service account.

    ``long_lived_connections``: how many connections stay busy for long (each open watch holds one).
    kubernetes-asyncio's pool holds 100, so with many watches the plain requests would otherwise wait
    for a free connection forever. The caller closes the client (``await api.close()``).
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if path:
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = max(100, long_lived_connections + 16)
    return client.ApiClient(configuration)


# ------------------------------------------------------------------ tolerant readers of API dicts
# An API answer is untrusted: a field of the wrong type reads as absent, never as an exception.


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def string_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in as_mapping(value).items()}


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_mapping(obj.get("metadata"))
