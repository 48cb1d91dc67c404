"""The router: what an inference gateway does, sending each request to the least-loaded ready replica
that has capacity, and holding the others in a queue per model in front of the pods.

Replicas of one model are pooled across all its variants (the gateway does not care which Deployment
a pod belongs to). Only *ready* replicas receive traffic; a pod that is starting, not ready, or deleted
gets nothing — which is what makes a scaled-away replica go quiet, and a new one useful only once the
emulated kubelet has marked it Ready.

`Router` is the live sandbox's gateway, with the Inference Gateway's *flow control* (the Gateway API
Inference Extension): a request goes to the least-loaded ready replica that has capacity
(`has_capacity`, the extension's saturation detector with its default thresholds); when none has —
always when the model has no ready replica, which is how a model at zero sees its first requests —
it waits in the model's FIFO (`FlowQueue`) and is sent as soon as a replica can take it (a replica
turns ready; `run` looks again every 50 ms as replicas free up), or fails after the request timeout.
The queue's length per model is what the inference gateway exports,
`inference_extension_flow_control_queue_size{target_model_name}` (`QueueSizeCollector`; the sandbox
serves it on the router's `/metrics`). The decision lab drives the same pure pieces (docs/lab.md,
"Gateway"; docs/sandbox.md, "The router").
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Generic, NewType, Protocol, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PodKey = NewType("PodKey", str)  # "<namespace>/<pod name>"

# How often waiting requests are offered to replicas again while any wait: as often as the extension
# refreshes its view of the pods' metrics.
DISPATCH_INTERVAL: Final = 0.05
DEFAULT_REQUEST_TIMEOUT: Final = 60.0


def pod_key(namespace: str, name: str) -> PodKey:
    return PodKey(f"{namespace}/{name}")


class Backend(Protocol):
    """A replica the router can send to (`vllm.EmulatedServer` is one)."""

    def submit(self, *, input_tokens: int, output_tokens: int) -> bool: ...

    def replica_load(self, key: str) -> ReplicaLoad: ...


@dataclass
class _Endpoint:
    model_id: str
    backend: Backend
    ready: bool = False
    routed: int = 0


@dataclass
class ModelCounters:
    routed: int = 0  # sent to a replica, at once or after waiting
    queued: int = 0  # waited at the gateway first (then routed, timed out, or still waiting)
    timed_out: int = 0  # waited longer than the request timeout: not served (the gateway's 503/429)
    rejected: int = 0  # a replica refused the request (larger than its cache)
    waited_seconds: float = 0.0  # total time routed requests spent in the queue


@dataclass(frozen=True, slots=True)
class _Request:
    input_tokens: int
    output_tokens: int
    arrived: float


class Router:
    """The live gateway; `clock` is any monotonic seconds (tests pass their own).

    With `wait_for_capacity=False` the saturation detector is off: requests go to the least-loaded
    ready replica whatever its load, and wait only while the model has no ready replica at all.
    """

    def __init__(
        self,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        wait_for_capacity: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._endpoints: dict[PodKey, _Endpoint] = {}
        self.counters: dict[str, ModelCounters] = {}
        self.wait_for_capacity = wait_for_capacity
        self._queue: FlowQueue[_Request] = FlowQueue(timeout=request_timeout)
        self._clock = clock
        self._queued = asyncio.Event()

    # -- endpoints

    def add_model(self, model_id: str) -> None:
        """A model the gateway serves, so its queue is reported (as 0) before its first request."""
        self.counters.setdefault(model_id, ModelCounters())

    def add(self, key: PodKey, *, model_id: str, backend: Backend, ready: bool = False) -> None:
        self.add_model(model_id)
        self._endpoints[key] = _Endpoint(model_id=model_id, backend=backend, ready=ready)
        if ready:
            self.dispatch()

    def set_ready(self, key: PodKey, ready: bool) -> None:
        endpoint = self._endpoints.get(key)
        if endpoint is not None:
            endpoint.ready = ready
            if ready:
                self.dispatch()  # a model at zero is served the moment its first replica is

    def remove(self, key: PodKey) -> None:
        self._endpoints.pop(key, None)

    def ready(self, model_id: str) -> list[PodKey]:
        return sorted(k for k, e in self._endpoints.items() if e.ready and e.model_id == model_id)

    def routed_to(self, key: PodKey) -> int:
        endpoint = self._endpoints.get(key)
        return 0 if endpoint is None else endpoint.routed

    def choose(self, model_id: str) -> PodKey | None:
        """The ready replica of `model_id` to send to now (`pick`); None when the request must wait."""
        loads = [self._endpoints[key].backend.replica_load(key) for key in self.ready(model_id)]
        chosen = pick(loads, flow_control=self.wait_for_capacity)
        return None if chosen is None else PodKey(chosen)

    # -- requests

    def route(self, model_id: str, *, input_tokens: int, output_tokens: int) -> bool:
        """Take one request: sent to a replica, or queued. False only when a replica refused it."""
        counters = self.counters.setdefault(model_id, ModelCounters())
        self.dispatch()  # those waiting go first, where they can
        now = self._clock()
        request = _Request(input_tokens=input_tokens, output_tokens=output_tokens, arrived=now)
        if not self._queue.size(model_id):  # FIFO: nobody overtakes a waiting request
            key = self.choose(model_id)
            if key is not None:
                return self._send(model_id, key, request, now)
        self._queue.push(model_id, request, now=now)
        counters.queued += 1
        self._queued.set()
        return True

    def dispatch(self) -> None:
        """Send waiting requests, oldest first, to replicas that can take them; expire the overdue."""
        now = self._clock()
        self._expire(now)
        for model_id in self._queue.models():
            while self._queue.size(model_id):
                key = self.choose(model_id)
                if key is None:
                    break
                self._send(model_id, key, self._queue.pop(model_id), now)

    def queue_size(self, model_id: str) -> int:
        """Requests of `model_id` waiting now (the gateway's flow-control queue)."""
        self._expire(self._clock())
        return self._queue.size(model_id)

    def models(self) -> list[str]:
        return sorted(self.counters)

    async def run(self, *, interval: float = DISPATCH_INTERVAL) -> None:
        """While requests wait, offer them to the replicas every `interval` (capacity frees up as
        replicas finish requests) and time them out; idle otherwise. Runs until cancelled."""
        while True:
            await self._queued.wait()
            self.dispatch()
            if not self._queue.waiting():
                self._queued.clear()
                continue
            await asyncio.sleep(interval)

    def _send(self, model_id: str, key: PodKey, request: _Request, now: float) -> bool:
        counters = self.counters[model_id]
        endpoint = self._endpoints[key]
        if not endpoint.backend.submit(input_tokens=request.input_tokens, output_tokens=request.output_tokens):
            counters.rejected += 1
            return False
        endpoint.routed += 1
        counters.routed += 1
        counters.waited_seconds += now - request.arrived
        return True

    def _expire(self, now: float) -> None:
        for model_id in self._queue.models():
            for _ in self._queue.expire_model(model_id, now):
                self.counters[model_id].timed_out += 1


class QueueSizeCollector(Collector):
    """`inference_extension_flow_control_queue_size{target_model_name}`: one gauge per model the router
    serves, as the Gateway API Inference Extension exports it."""

    def __init__(self, router: Router) -> None:
        self._router = router

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            QUEUE_SIZE_METRIC, "Requests waiting in the flow-control queue, per model", labels=["target_model_name"]
        )
        for model_id in self._router.models():
            family.add_metric([model_id], float(self._router.queue_size(model_id)))
        yield family


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
        return [entry for model_id in sorted(self._queues) for entry in self.expire_model(model_id, now)]

    def expire_model(self, model_id: str, now: float) -> list[tuple[T, float]]:
        """`expire` for one model's queue."""
        queue = self._queues.get(model_id)
        expired: list[tuple[T, float]] = []
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
