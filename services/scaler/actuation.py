"""The scaler's Kubernetes edge: patch ``deployments/scale``, write VA status, record Events.

Only this module (and the ConfigMap watch in ``configsource.py``) talks to the Kubernetes API.

Scaling is a read-check-write with optimistic concurrency: read the Deployment, refuse when its
generation moved since the decision (someone else changed it; the next snapshot decides again),
skip a no-op, then patch the scale subresource *with the resourceVersion just read*, so a concurrent
writer makes the patch fail with 409 and the whole read-check-write is retried. 409, 429 and 5xx
are retried with bounded, jittered backoff; other 4xx fail at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from services.scaler.actions import Condition, ScaleAction
from shared import kube

log = logging.getLogger("wva.scaler.actuation")

MERGE_PATCH: Final = "application/merge-patch+json"
COMPONENT: Final = "wva-scaler"

Outcome = Literal["applied", "no_op", "target_moved", "not_found", "failed"]


def transient(exc: BaseException) -> bool:
    """Worth retrying: conflicts, throttling, server errors and broken connections."""
    if isinstance(exc, ApiException):
        return exc.status in (409, 429) or (exc.status or 0) >= 500
    return isinstance(exc, (OSError, TimeoutError))


@dataclass(frozen=True, slots=True)
class ScaleResult:
    outcome: Outcome
    previous: int | None = None
    detail: str = ""

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"


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
            retry=retry_if_exception(transient),
            stop=stop_after_attempt(self._attempts) | stop_after_delay(self._budget),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
            reraise=True,
        )

    async def scale(self, action: ScaleAction) -> ScaleResult:
        try:
            async for attempt in self._retrying():
                with attempt:
                    return await self._scale_once(action)
        except ApiException as exc:
            if exc.status == 404:
                return ScaleResult("not_found", detail=f"deployment {action.namespace}/{action.deployment} not found")
            return ScaleResult("failed", detail=f"HTTP {exc.status}: {exc.reason}")
        except (OSError, TimeoutError) as exc:
            return ScaleResult("failed", detail=f"API unreachable: {exc}")
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

    async def _scale_once(self, action: ScaleAction) -> ScaleResult:
        deployment = await self._apps.read_namespaced_deployment(action.deployment, action.namespace)
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
        body = {"metadata": {"resourceVersion": meta.resource_version}, "spec": {"replicas": action.replicas}}
        # `_content_type` is accepted at run time but missing from the generated signatures.
        await self._apps.patch_namespaced_deployment_scale(
            action.deployment, action.namespace, body, _content_type=MERGE_PATCH  # type: ignore[call-arg]
        )
        return ScaleResult("applied", previous=current)

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge-patch the VA's status subresource; False (logged) when it could not be written."""
        try:
            async for attempt in self._retrying():
                with attempt:
                    await self._custom.patch_namespaced_custom_object_status(
                        kube.GROUP, kube.VERSION, namespace, kube.PLURAL, name, {"status": status},
                        _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # custom resources take no strategic merge
                    )
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning(
                "could not write VA status: %s", getattr(exc, "reason", exc), extra={"namespace": namespace, "va": name}
            )
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
            await self._core.create_namespaced_event(namespace, body)  # type: ignore[arg-type]  # dicts serialize as-is
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("could not record event: %s", getattr(exc, "reason", exc), extra={"namespace": namespace, "va": va})


def conditions_payload(
    conditions: tuple[Condition, ...], previous: list[dict[str, Any]], *, generation: int, now: datetime
) -> list[dict[str, Any]]:
    """metav1.Condition dicts; ``lastTransitionTime`` moves only when a condition's status changes."""
    before = {c.get("type"): c for c in previous}
    out = []
    for c in conditions:
        old = before.get(c.type)
        changed = old is None or old.get("status") != c.status
        out.append(
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "observedGeneration": generation,
                "lastTransitionTime": now.isoformat().replace("+00:00", "Z") if changed else old["lastTransitionTime"],  # type: ignore[index]
            }
        )
    return out
