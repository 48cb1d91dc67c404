"""The scaler's Kubernetes edge: patch ``deployments/scale``, write VA status, record Events.

Only this module, ``authority.py`` and ``configsource.py`` talk to the Kubernetes API.

Scaling is a read-check-write with optimistic concurrency: read the Deployment, refuse when its
generation moved since the decision (someone else changed it; the next snapshot decides again),
skip a no-op, ask the fence (with several replicas: does this one still hold the group's lease with
time to spare, docs/design.md §11), then patch the scale subresource *with the resourceVersion just
read*, so a concurrent writer makes the patch fail with 409 and the whole read-check-write is retried. Transient failures
(:func:`shared.kube.is_transient`) are retried with bounded, jittered backoff; every request has a
timeout and the whole attempt a time budget, so a hung API server delays one step by a bounded time.
No exception of the client libraries leaves this module: every failure becomes an outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from services.scaler.actions import ScaleAction, VAStatus
from shared import kube

log = logging.getLogger("wva.scaler.actuation")

MERGE_PATCH: Final = "application/merge-patch+json"
COMPONENT: Final = "wva-scaler"

Outcome = Literal["applied", "no_op", "target_moved", "not_found", "failed", "fenced"]
Fence = Callable[[], str]
"""Asked right before each PATCH: why this replica may not write now ("" when it may)."""


@dataclass(frozen=True, slots=True)
class ScaleResult:
    outcome: Outcome
    previous: int | None = None
    detail: str = ""

    @property
    def applied(self) -> bool:
        return self.outcome in ("applied", "no_op")


class KubeActuator:
    """Scale patches, VA status writes and Events through one kubernetes-asyncio client."""

    def __init__(self, api: client.ApiClient, *, attempts: int = 5, budget_seconds: float = 20.0) -> None:
        self._apps = client.AppsV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._attempts = attempts
        self._budget = budget_seconds

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception(kube.is_transient),
            stop=stop_after_attempt(self._attempts) | stop_after_delay(self._budget),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
            reraise=True,
        )

    async def scale(self, action: ScaleAction, *, fence: Fence | None = None) -> ScaleResult:
        try:
            async with asyncio.timeout(self._budget):
                async for attempt in self._retrying():
                    with attempt:
                        return await self._scale_once(action, fence)
        except ApiException as exc:
            if exc.status == 404:
                return ScaleResult("not_found", detail=f"deployment {action.namespace}/{action.deployment} not found")
            return ScaleResult("failed", detail=kube.describe(exc))
        except Exception as exc:  # any failure of the client libraries is an outcome, never a crash
            return ScaleResult("failed", detail=f"API unreachable: {kube.describe(exc)}")
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

    async def _scale_once(self, action: ScaleAction, fence: Fence | None) -> ScaleResult:
        deployment = await self._apps.read_namespaced_deployment(
            action.deployment, action.namespace, _request_timeout=kube.REQUEST_TIMEOUT
        )
        meta, spec = deployment.metadata, deployment.spec
        current = spec.replicas if spec.replicas is not None else 1
        if meta.generation != action.expected_generation:
            return ScaleResult(
                "target_moved",
                previous=current,
                detail=f"generation {meta.generation} != decided-on {action.expected_generation}",
            )
        if current == action.replicas:
            return ScaleResult("no_op", previous=current)
        fenced = fence() if fence is not None else ""
        if fenced:
            return ScaleResult("fenced", previous=current, detail=fenced)
        body = {"metadata": {"resourceVersion": meta.resource_version}, "spec": {"replicas": action.replicas}}
        # `_content_type` is accepted at run time but missing from the generated signatures.
        await self._apps.patch_namespaced_deployment_scale(
            action.deployment, action.namespace, body, _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            _request_timeout=kube.REQUEST_TIMEOUT,
        )
        return ScaleResult("applied", previous=current)

    async def write_status(
        self, namespace: str, name: str, status: VAStatus, *, fence: Fence | None = None
    ) -> bool | None:
        """Merge-patch the VA's status subresource: True when written, None when the VA does not exist
        or ``fence`` refuses (nothing to retry: the group's owner writes its own), False (logged) when
        it could not be written now. The fence is asked right before each attempt, as for a scale."""
        body = {"status": msgspec.to_builtins(status)}
        try:
            async with asyncio.timeout(self._budget):
                async for attempt in self._retrying():
                    with attempt:
                        fenced = fence() if fence is not None else ""
                        if fenced:
                            log.info("not writing the status of %s/%s: %s", namespace, name, fenced)
                            return None
                        await self._custom.patch_namespaced_custom_object_status(
                            kube.GROUP, kube.VERSION, namespace, kube.PLURAL, name, body,
                            _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # custom resources take no strategic merge
                            _request_timeout=kube.REQUEST_TIMEOUT,
                        )
        except ApiException as exc:
            if exc.status == 404:
                log.info("no VA %s/%s to write a status to", namespace, name)
                return None
            log.warning("could not write VA status: %s", kube.describe(exc), extra={"namespace": namespace, "va": name})
            return False
        except Exception as exc:  # a status that cannot be written is retried by the caller, never fatal
            log.warning("could not write VA status: %s", kube.describe(exc), extra={"namespace": namespace, "va": name})
            return False
        return True

    async def record_event(self, *, namespace: str, va: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the VA, as `kubectl describe` shows; best effort."""
        now = datetime.now(UTC)
        body = {
            "metadata": {"generateName": f"{va}.", "namespace": namespace},
            "involvedObject": {"apiVersion": kube.API_VERSION, "kind": kube.KIND, "name": va, "namespace": namespace},
            "reason": reason,
            "message": message,
            "type": "Normal",
            "source": {"component": COMPONENT},
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        try:
            # A dict serializes as-is; the client's models add nothing here.
            event: Any = body
            await self._core.create_namespaced_event(namespace, event, _request_timeout=kube.REQUEST_TIMEOUT)
        except Exception as exc:  # best effort
            log.warning("could not record event: %s", kube.describe(exc), extra={"namespace": namespace, "va": va})
