"""The simulated cluster: Deployments and their pods, the deployment controller, and the gateway in
front of the pods, with the outcome of every request (pure; driven by `simulation`).

- **Pods.** Each pod runs the sandbox's vLLM replica model (`services.sandbox.queueing`). A pod is
  created by a scale-up and becomes Ready `startupSeconds` later; only Ready pods get requests. GPU
  cost counts from creation to deletion (a starting pod costs money).
- **Deployment controller.** Scaling sets spec replicas and bumps the Deployment's generation (as
  the API server does for a spec change); missing pods are created at once; extra pods are deleted
  as a ReplicaSet ranks them: not-ready pods first, then the newest. A deleted pod terminates as a
  Kubernetes pod of a vLLM server does: it leaves the gateway's endpoints at once (no new requests)
  and stops counting toward the Deployment's replicas, while its server — given SIGTERM — finishes
  what it has accepted, running and waiting; what is still unfinished when the grace period
  (`terminationGracePeriodSeconds`, 30 s by default) ends is killed and counts as failed (`deleted`).
  A terminating pod costs GPU time until it stops.
- **Gateway.** With flow control (the default) a request goes to the least-loaded Ready replica that
  has capacity (`router.has_capacity`: the Gateway API Inference Extension's saturation detector and
  its defaults); otherwise it waits in the model's FIFO queue in front of the pods and fails after the
  request timeout. Without flow control it goes to the least-loaded Ready replica at once, or fails
  when none is Ready: what the live sandbox's router does today.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from services.lab import fleet as fleets
from services.lab.traffic import Arrival
from services.sandbox import queueing
from services.sandbox import router as routing

Outcome = Literal["", "served", "timeout", "deleted", "rejected", "no_replica", "unfinished"]
FAILURES: Final[tuple[Outcome, ...]] = ("timeout", "deleted", "rejected", "no_replica", "unfinished")


@dataclass(slots=True)
class Pod:
    name: str
    variant: str
    serial: int  # creation order, for "newest first"
    created: float
    ready_at: float
    replica: queueing.Replica
    ready: bool = False
    terminating: float | None = None  # when its deletion was asked for
    deleted: float | None = None  # when it stopped (drained, or killed at the end of its grace)


@dataclass(slots=True)
class Deployment:
    variant: fleets.Variant
    spec: int
    generation: int = 1
    pods: dict[str, Pod] = field(default_factory=dict)  # live pods by name
    scalings: int = 0  # spec changes

    @property
    def ready(self) -> int:
        return sum(1 for p in self.pods.values() if p.ready)


class RequestLog:
    """What happened to every request, by its index in the traffic (columns, for speed)."""

    def __init__(self, arrivals: Sequence[Arrival]) -> None:
        n = len(arrivals)
        self.arrivals = arrivals
        self.outcome: list[Outcome] = [""] * n
        self.ttft = [math.nan] * n  # from arrival at the gateway to the first token
        self.e2e = [math.nan] * n
        self.finished = [math.nan] * n  # when it completed or failed
        self.variant: list[str] = [""] * n
        self.open = 0  # arrived and not yet served or failed

    def fail(self, index: int, outcome: Outcome, at: float) -> None:
        self.outcome[index] = outcome
        self.finished[index] = at
        self.open -= 1

    def serve(self, index: int, *, variant: str, ttft: float, e2e: float, at: float) -> None:
        self.outcome[index] = "served"
        self.variant[index] = variant
        self.ttft[index] = ttft
        self.e2e[index] = e2e
        self.finished[index] = at
        self.open -= 1


class Cluster:
    def __init__(
        self,
        *,
        fleet: fleets.Fleet,
        arrivals: Sequence[Arrival],
        initial: Mapping[str, int],
        flow_control: bool,
        request_timeout: float,
        termination_grace: float = 30.0,
    ) -> None:
        self.fleet = fleet
        self.model_id = fleet.model
        self.flow_control = flow_control
        self.termination_grace = termination_grace
        self.log = RequestLog(arrivals)
        self.queue: routing.FlowQueue[int] = routing.FlowQueue(timeout=request_timeout)
        self.deployments: dict[str, Deployment] = {}
        self._serial = 0
        self._by_name: dict[str, Pod] = {}  # live pods
        self._dispatched: dict[int, float] = {}  # request index -> when a replica got it
        self._terminating: dict[str, Pod] = {}  # deleted, still finishing what they accepted
        self._gone: list[Pod] = []  # stopped pods, for cost accounting
        self._listeners: list[Callable[[float], None]] = []
        for v in fleet.variants:
            d = Deployment(variant=v, spec=initial.get(v.name, v.initial))
            self.deployments[v.name] = d
            for _ in range(d.spec):
                pod = self._create_pod(d, now=0.0, startup=0.0)  # pre-existing: Ready at the start
                pod.ready = True

    # ------------------------------------------------------------------ the deployment controller

    def on_change(self, listener: Callable[[float], None]) -> None:
        """Call `listener(now)` after every change a watcher would see (spec, pod created, ready, gone)."""
        self._listeners.append(listener)

    def _changed(self, now: float) -> None:
        for listener in self._listeners:
            listener(now)

    def scale(self, variant: str, replicas: int, now: float) -> list[Pod]:
        """Set spec replicas (clamped at 0); returns the pods created (Ready after their start-up)."""
        d = self.deployments[variant]
        replicas = max(0, replicas)
        if replicas == d.spec:
            return []
        d.spec = replicas
        d.generation += 1
        d.scalings += 1
        created: list[Pod] = []
        while len(d.pods) < replicas:
            created.append(self._create_pod(d, now=now, startup=d.variant.startup_seconds))
        if len(d.pods) > replicas:
            # A ReplicaSet's ranking: pods that are not ready go first, then the youngest.
            victims = sorted(d.pods.values(), key=lambda p: (p.ready, -p.serial))[: len(d.pods) - replicas]
            for pod in victims:
                self._delete_pod(d, pod, now)
        self._changed(now)
        return created

    def _create_pod(self, d: Deployment, *, now: float, startup: float) -> Pod:
        self._serial += 1
        pod = Pod(
            name=f"{d.variant.name}-{self._serial:05d}",
            variant=d.variant.name,
            serial=self._serial,
            created=now,
            ready_at=now + startup,
            replica=queueing.Replica(d.variant.server),
        )
        d.pods[pod.name] = pod
        self._by_name[pod.name] = pod
        return pod

    def _delete_pod(self, d: Deployment, pod: Pod, now: float) -> None:
        pod.terminating = now
        pod.ready = False
        del d.pods[pod.name]
        del self._by_name[pod.name]
        self._terminating[pod.name] = pod
        self._look(pod, now)  # stops at once when it has nothing to finish

    def terminating(self) -> list[Pod]:
        """Pods deleted but still finishing their requests (within their grace period)."""
        return list(self._terminating.values())

    def end_grace(self, pod: Pod, now: float) -> None:
        """The grace period is over: what the pod has not finished is killed with it."""
        if pod.deleted is not None:
            return
        self._look(pod, now)
        if pod.deleted is not None:
            return
        for request in pod.replica.in_flight():
            self._dispatched.pop(request.id, None)
            self.log.fail(request.id, "deleted", now)
        self._stop(pod, now)

    def _stop(self, pod: Pod, at: float) -> None:
        pod.deleted = at
        del self._terminating[pod.name]
        self._gone.append(pod)

    def mark_ready(self, pod: Pod, now: float) -> None:
        if pod.deleted is not None or pod.ready:
            return
        pod.ready = True
        self._changed(now)

    # ------------------------------------------------------------------ observation

    def pods(self, variant: str | None = None) -> list[Pod]:
        """Live pods (of one variant, or all), by name."""
        ds = [self.deployments[variant]] if variant is not None else list(self.deployments.values())
        return sorted((p for d in ds for p in d.pods.values()), key=lambda p: p.name)

    def ready_pods(self) -> Iterable[Pod]:
        for d in self.deployments.values():
            for pod in d.pods.values():
                if pod.ready:
                    yield pod

    def look(self, pod: Pod, now: float) -> queueing.Replica:
        """The pod's replica model brought to `now` (finished requests recorded)."""
        self._look(pod, now)
        return pod.replica

    def _look(self, pod: Pod, now: float) -> None:
        replica = pod.replica
        if pod.deleted is not None:
            return
        if pod.terminating is not None:
            now = min(now, pod.terminating + self.termination_grace)
        replica.advance(now)
        done = replica.completions
        last = pod.terminating
        while done:
            c = done.popleft()
            index = c.request.id
            waited = self._dispatched.pop(index) - self.log.arrivals[index].t
            self.log.serve(
                index, variant=pod.variant, ttft=waited + c.ttft, e2e=waited + c.e2e, at=c.finished
            )
            last = c.finished
        if pod.terminating is not None and last is not None and not replica.in_flight():
            self._stop(pod, max(last, pod.terminating))  # drained: it stops with its last request

    def replica_seconds(self, variant: str, *, until: float) -> float:
        """Pod lifetime (creation to deletion) within [0, until], summed over the variant's pods."""
        total = 0.0
        for pod in [*self.deployments[variant].pods.values(), *self._terminating.values(), *self._gone]:
            if pod.variant != variant:
                continue
            end = until if pod.deleted is None else min(pod.deleted, until)
            total += max(0.0, end - max(pod.created, 0.0))
        return total

    # ------------------------------------------------------------------ the gateway

    def _loads(self, now: float) -> list[routing.ReplicaLoad]:
        loads = []
        for pod in self.ready_pods():
            replica = self.look(pod, now)
            loads.append(
                routing.ReplicaLoad(
                    key=pod.name,
                    waiting=replica.num_waiting,
                    running=replica.num_running,
                    kv_cache_usage=replica.kv_cache_usage,
                    max_num_seqs=replica.params.max_num_seqs,
                )
            )
        return loads

    def arrive(self, index: int, now: float) -> None:
        """A request reaches the gateway."""
        self.log.open += 1
        self.expire(now)
        if self.flow_control and self.queue.size(self.model_id):
            self.queue.push(self.model_id, index, now=now)  # FIFO: nobody overtakes a waiting request
            return
        key = routing.pick(self._loads(now), flow_control=self.flow_control)
        if key is not None:
            self._submit(index, key, now)
        elif self.flow_control:
            self.queue.push(self.model_id, index, now=now)
        else:
            self.log.fail(index, "no_replica", now)

    def dispatch(self, now: float) -> None:
        """Send waiting requests to replicas that have capacity again, oldest first."""
        self.expire(now)
        while self.queue.size(self.model_id):
            key = routing.pick(self._loads(now), flow_control=True)
            if key is None:
                return
            self._submit(self.queue.pop(self.model_id), key, now)

    def expire(self, now: float) -> None:
        for index, deadline in self.queue.expire(now):
            self.log.fail(index, "timeout", deadline)

    def _submit(self, index: int, key: str, now: float) -> None:
        pod = self._by_name[key]
        a = self.log.arrivals[index]
        request = queueing.Request(
            arrival=now, input_tokens=a.input_tokens, output_tokens=a.output_tokens, id=index
        )
        if pod.replica.submit(request) == "rejected":
            self.log.fail(index, "rejected", now)
        else:
            self._dispatched[index] = now

    def queue_size(self) -> int:
        return self.queue.size(self.model_id)

    # ------------------------------------------------------------------ the end

    def settle(self, now: float) -> int:
        """Bring every live pod to `now` and return how many requests are still open."""
        for d in self.deployments.values():
            for pod in d.pods.values():
                self._look(pod, now)
        for pod in self.terminating():
            self._look(pod, now)
        return self.log.open

    def abandon(self, now: float) -> None:
        """The run is over: whatever is still waiting or running did not finish."""
        self.settle(now)
        for index in self.queue.drain():
            self.log.fail(index, "unfinished", now)
        for index in sorted(self._dispatched):
            self.log.fail(index, "unfinished", now)
        self._dispatched.clear()
