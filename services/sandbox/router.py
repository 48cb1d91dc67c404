"""The router: what an inference gateway does, sending each request to the least-loaded ready replica.

Replicas of one model are pooled across all its variants (the gateway does not care which Deployment
a pod belongs to). Only *ready* replicas receive traffic; a pod that is starting, not ready, or deleted
gets nothing — which is what makes a scaled-away replica go quiet, and a new one useful only once the
emulated kubelet has marked it Ready.

`Router` is what the live sandbox uses today: every request goes to a ready replica at once (none
ready: refused, the gateway's 503). The pure pieces below it model the Inference Gateway's *flow
control* (the Gateway API Inference Extension): a replica takes a request only while it has capacity
(`has_capacity`, the extension's saturation detector with its default thresholds), otherwise the request
waits in a per-model FIFO in front of the pods (`FlowQueue`) and fails after a timeout. The decision
lab drives them; the live sandbox can adopt them (docs/lab.md, "Gateway").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Generic, NewType, Protocol, TypeVar

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


# --- the inference gateway's flow control (pure) ---------------------------------------------------

# The saturation detector's defaults in the Gateway API Inference Extension
# (kubernetes-sigs/gateway-api-inference-extension, pkg/epp/saturationdetector/config.go:
# DefaultQueueDepthThreshold = 5, DefaultKVCacheUtilThreshold = 0.8): a replica has "good capacity"
# while it has at most 5 waiting requests and at most 80 % of its KV cache in use; when none has,
# the pool is saturated and requests wait in the gateway's queue.
QUEUE_DEPTH_THRESHOLD: Final = 5
KV_CACHE_UTIL_THRESHOLD: Final = 0.8
# The gateway's queue length per model, as the extension exports it (labelled target_model_name).
QUEUE_SIZE_METRIC: Final = "inference_extension_flow_control_queue_size"


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """What the gateway knows of one ready replica when it routes."""

    key: str
    waiting: int
    running: int
    kv_cache_usage: float
    max_num_seqs: int

    @property
    def load(self) -> float:
        """Requests in the system per batch slot (what `Router` balances on, too)."""
        return (self.waiting + self.running) / self.max_num_seqs


def has_capacity(
    replica: ReplicaLoad,
    *,
    queue_depth_threshold: int = QUEUE_DEPTH_THRESHOLD,
    kv_cache_util_threshold: float = KV_CACHE_UTIL_THRESHOLD,
) -> bool:
    """The saturation detector's rule for one replica: few enough waiting and KV cache not too full."""
    return replica.waiting <= queue_depth_threshold and replica.kv_cache_usage <= kv_cache_util_threshold


def pick(replicas: Iterable[ReplicaLoad], *, flow_control: bool) -> str | None:
    """The least-loaded replica (ties: first key); with flow control only among those with capacity.

    None: nothing to send to — without flow control that is a refusal, with it the request waits.
    """
    best: tuple[float, str] | None = None
    for replica in replicas:
        if flow_control and not has_capacity(replica):
            continue
        candidate = (replica.load, replica.key)
        if best is None or candidate < best:
            best = candidate
    return None if best is None else best[1]


T = TypeVar("T")


@dataclass(slots=True)
class _Queued(Generic[T]):
    item: T
    deadline: float


class FlowQueue(Generic[T]):
    """Requests waiting in front of the pods, FIFO per model, each failing at its deadline."""

    def __init__(self, *, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"request timeout must be > 0, got {timeout}")
        self.timeout = timeout
        self._queues: dict[str, deque[_Queued[T]]] = {}

    def push(self, model_id: str, item: T, *, now: float) -> None:
        self._queues.setdefault(model_id, deque()).append(_Queued(item, now + self.timeout))

    def size(self, model_id: str) -> int:
        queue = self._queues.get(model_id)
        return 0 if queue is None else len(queue)

    def waiting(self) -> bool:
        return any(self._queues.values())

    def models(self) -> list[str]:
        """Models with requests waiting, sorted."""
        return sorted(m for m, q in self._queues.items() if q)

    def pop(self, model_id: str) -> T:
        return self._queues[model_id].popleft().item

    def expire(self, now: float) -> list[tuple[T, float]]:
        """Remove and return `(item, deadline)` for every request whose deadline is at or before `now`."""
        expired: list[tuple[T, float]] = []
        for model_id in sorted(self._queues):
            queue = self._queues[model_id]
            # Deadlines grow along a FIFO (the timeout is the same for all), so only the head can be due.
            while queue and queue[0].deadline <= now:
                entry = queue.popleft()
                expired.append((entry.item, entry.deadline))
        return expired

    def drain(self) -> list[T]:
        """Everything still waiting (at the end of a run), in model then arrival order."""
        items = [q.item for model_id in sorted(self._queues) for q in self._queues[model_id]]
        self._queues.clear()
        return items
