"""The router: what an inference gateway does, sending each request to the least-loaded ready replica.

Replicas of one model are pooled across all its variants (the gateway does not care which Deployment
a pod belongs to). Only *ready* replicas receive traffic; a pod that is starting, not ready, or deleted
gets nothing — which is what makes a scaled-away replica go quiet, and a new one useful only once the
emulated kubelet has marked it Ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType, Protocol

PodKey = NewType("PodKey", str)  # "<namespace>/<pod name>"


def pod_key(namespace: str, name: str) -> PodKey:
    return PodKey(f"{namespace}/{name}")


class Backend(Protocol):
    """A replica the router can send to (`vllm.EmulatedServer` is one)."""

    def submit(self, *, input_tokens: int, output_tokens: int) -> bool: ...

    def load(self) -> float: ...


@dataclass
class _Endpoint:
    model_id: str
    backend: Backend
    ready: bool = False
    routed: int = 0


@dataclass
class ModelCounters:
    routed: int = 0
    no_replica: int = 0  # the gateway's 503: nothing ready for this model
    rejected: int = 0  # a replica refused the request (larger than its cache)


@dataclass
class Router:
    _endpoints: dict[PodKey, _Endpoint] = field(default_factory=dict)
    counters: dict[str, ModelCounters] = field(default_factory=dict)

    def add(self, key: PodKey, *, model_id: str, backend: Backend, ready: bool = False) -> None:
        self._endpoints[key] = _Endpoint(model_id=model_id, backend=backend, ready=ready)

    def set_ready(self, key: PodKey, ready: bool) -> None:
        endpoint = self._endpoints.get(key)
        if endpoint is not None:
            endpoint.ready = ready

    def remove(self, key: PodKey) -> None:
        self._endpoints.pop(key, None)

    def ready(self, model_id: str) -> list[PodKey]:
        return sorted(k for k, e in self._endpoints.items() if e.ready and e.model_id == model_id)

    def routed_to(self, key: PodKey) -> int:
        endpoint = self._endpoints.get(key)
        return 0 if endpoint is None else endpoint.routed

    def choose(self, model_id: str) -> PodKey | None:
        """The ready replica of `model_id` with the lowest load; ties go to the first name, for replays."""
        best: tuple[float, PodKey] | None = None
        for key in self.ready(model_id):
            candidate = (self._endpoints[key].backend.load(), key)
            if best is None or candidate < best:
                best = candidate
        return None if best is None else best[1]

    def route(self, model_id: str, *, input_tokens: int, output_tokens: int) -> bool:
        """Send one request; False when no ready replica took it."""
        counters = self.counters.setdefault(model_id, ModelCounters())
        key = self.choose(model_id)
        if key is None:
            counters.no_replica += 1
            return False
        endpoint = self._endpoints[key]
        if not endpoint.backend.submit(input_tokens=input_tokens, output_tokens=output_tokens):
            counters.rejected += 1
            return False
        endpoint.routed += 1
        counters.routed += 1
        return True
