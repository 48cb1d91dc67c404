"""The discrete-event loop that runs one policy on one traffic (pure: no clock, no randomness).

Events, in simulated time: arrivals (from the traffic), pods turning Ready, the gateway's dispatch
(every 50 ms while requests wait in front of the pods, as often as its metrics refresh), Prometheus'
discovery ticks and scrapes (only when the policy reads Prometheus), the policy's own timers, and a
sample tick that records the run's timeline. Ties go in the order the events were scheduled, so the
same inputs give the same run. After the traffic ends the run goes on, policies and all, until every
request has finished or failed (bounded by `drain_limit`).

Message timestamps need a wall clock; simulated time `t` is `EPOCH + t` there, and nothing in the
results depends on EPOCH.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from services.lab import fleet as fleets
from services.lab import observation
from services.lab.cluster import Cluster, Pod, RequestLog
from services.lab.observation import Prometheus, Reader
from services.lab.policies.base import Policy
from services.lab.settings import Settings, Timing
from services.lab.traffic import Traffic

EPOCH: Final = 1_700_000_000.0


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    spec: tuple[int, ...]  # per variant, in fleet order
    ready: tuple[int, ...]
    queue: int  # requests waiting at the gateway


@dataclass(frozen=True, slots=True)
class Scaling:
    t: float
    variant: str
    before: int
    after: int


@dataclass(kw_only=True)
class Run:
    """Everything one run produced (scoring turns it into figures)."""

    policy: str
    fleet: fleets.Fleet
    traffic: Traffic
    settings: Settings
    log: RequestLog
    samples: list[Sample]
    scalings: list[Scaling]
    replica_seconds: dict[str, float]  # within [0, traffic.duration]
    end: float
    events: int
    aborted: bool = False


class _Sim:
    """The facade a policy sees (`policies.base.Sim`) and the loop behind it."""

    def __init__(
        self,
        *,
        traffic: Traffic,
        fleet: fleets.Fleet,
        policy: Policy,
        settings: Settings,
        initial: Mapping[str, int] | None = None,
    ) -> None:
        self.traffic = traffic
        self.fleet = fleet
        self.settings = settings
        self._timing = settings.timing
        self._now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cluster = Cluster(
            fleet=fleet,
            arrivals=traffic.arrivals,
            initial=policy.initial(fleet, traffic) or initial or {},
            flow_control=settings.flow_control,
            request_timeout=settings.request_timeout,
            termination_grace=settings.termination_grace,
        )
        self._prometheus = Prometheus(
            scrape_interval=self._timing.scrape_interval, discovery_interval=self._timing.discovery_interval
        )
        self._exporters: dict[str, Reader] = {}
        self._dispatching = False
        self.scalings: list[Scaling] = []
        self.samples: list[Sample] = []
        self.events = 0

    # ------------------------------------------------------------------ policies.base.Sim

    @property
    def now(self) -> float:
        return self._now

    @property
    def cluster(self) -> Cluster:
        return self._cluster

    @property
    def prometheus(self) -> Prometheus:
        return self._prometheus

    @property
    def timing(self) -> Timing:
        return self._timing

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (max(t, self._now), next(self._seq), fn))

    def every(self, period: float, fn: Callable[[], None], *, start: float = 0.0) -> None:
        if period <= 0:
            raise ValueError(f"a period must be > 0, got {period}")
        ticks = itertools.count()

        def tick() -> None:
            fn()
            self.at(start + next(ticks) * period, tick)

        next(ticks)
        self.at(start, tick)

    def scale(self, variant: str, replicas: int) -> None:
        before = self._cluster.deployments[variant].spec
        created = self._cluster.scale(variant, replicas, self._now)
        after = self._cluster.deployments[variant].spec
        if after != before:
            self.scalings.append(Scaling(self._now, variant, before, after))
        for pod in created:
            self.at(pod.ready_at, lambda pod=pod: self._ready(pod))  # type: ignore[misc]
        for pod in self._cluster.terminating():
            if pod.terminating == self._now:
                grace_end = self._now + self._cluster.termination_grace
                self.at(grace_end, lambda pod=pod: self._cluster.end_grace(pod, self._now))  # type: ignore[misc]

    def add_target(self, name: str, reader: Reader) -> None:
        self._exporters[name] = reader

    # ------------------------------------------------------------------ the cluster's own events

    def _ready(self, pod: Pod) -> None:
        self._cluster.mark_ready(pod, self._now)
        self._dispatch()

    def _dispatch(self) -> None:
        self._dispatching = False
        self._cluster.dispatch(self._now)
        self._keep_dispatching()

    def _keep_dispatching(self) -> None:
        if not self._dispatching and self._cluster.queue_size():
            self._dispatching = True
            self.at(self._now + self._timing.dispatch_interval, self._dispatch)

    def _discover(self) -> None:
        cluster = self._cluster
        targets: dict[str, Reader] = dict(self._exporters)
        for pod in cluster.ready_pods():
            targets[pod.name] = lambda t, pod=pod: (
                {} if pod.deleted is not None else observation.pod_metrics(cluster.look(pod, t))
            )  # type: ignore[misc]
        for name, first in self._prometheus.discover(targets, self._now):
            self.at(first, lambda name=name: self._scrape(name))  # type: ignore[misc]

    def _scrape(self, name: str) -> None:
        following = self._prometheus.scrape(name, self._now)
        if following is not None:
            self.at(following, lambda: self._scrape(name))

    # ------------------------------------------------------------------ the loop

    def loop(
        self,
        *,
        observes: bool,
        sample_interval: float,
        progress: Callable[[float], None] | None,
        abort: Callable[[RequestLog], bool] | None,
    ) -> bool:
        """Run to the end; True when `abort` stopped it."""
        arrivals = self.traffic.arrivals
        duration = self.traffic.duration
        limit = duration + self.settings.drain_limit
        if observes:
            cluster = self._cluster

            def gateway(t: float) -> dict[str, float]:
                cluster.expire(t)
                return {"queue_size": float(cluster.queue_size())}

            self.add_target(observation.GATEWAY_TARGET, gateway)
            timing = self._timing
            first = timing.discovery_interval if timing.discovery_start is None else timing.discovery_start
            self.every(timing.discovery_interval, self._discover, start=first)
        state = {"aborted": False, "done": False}

        def sample() -> None:
            cluster = self._cluster
            deployments = cluster.deployments.values()
            self.samples.append(
                Sample(
                    t=self._now,
                    spec=tuple(d.spec for d in deployments),
                    ready=tuple(d.ready for d in deployments),
                    queue=cluster.queue_size(),
                )
            )
            if progress is not None:
                progress(self._now)
            if abort is not None and abort(cluster.log):
                state["aborted"] = True
            elif (
                i >= len(arrivals)
                and self._now >= duration
                and (cluster.settle(self._now) == 0 or self._now >= limit)
            ):
                state["done"] = True

        self.every(sample_interval, sample)
        i = 0
        heap = self._heap
        cluster = self._cluster
        while not (state["aborted"] or state["done"]):
            if i < len(arrivals) and (not heap or arrivals[i].t < heap[0][0]):
                self._now = arrivals[i].t
                cluster.arrive(i, self._now)
                self._keep_dispatching()
                i += 1
            else:
                t, _, fn = heapq.heappop(heap)
                self._now = t
                fn()
            self.events += 1
        cluster.abandon(self._now)
        return state["aborted"]


def run(
    *,
    traffic: Traffic,
    fleet: fleets.Fleet,
    policy: Policy,
    settings: Settings | None = None,
    initial: Mapping[str, int] | None = None,
    sample_interval: float | None = None,
    progress: Callable[[float], None] | None = None,
    abort: Callable[[RequestLog], bool] | None = None,
) -> Run:
    """Run `policy` on `traffic` over `fleet`. The run starts with the replicas the policy asks for,
    else `initial`, else the fleet's. `progress(now)` is called at every sample tick; `abort(log)`
    there too, ending the run early when it returns True."""
    settings = settings or Settings()
    sim = _Sim(traffic=traffic, fleet=fleet, policy=policy, settings=settings, initial=initial)
    policy.start(sim)
    interval = sample_interval if sample_interval is not None else default_sample_interval(traffic.duration)
    aborted = sim.loop(observes=policy.observes, sample_interval=interval, progress=progress, abort=abort)
    return Run(
        policy=policy.name,
        fleet=fleet,
        traffic=traffic,
        settings=settings,
        log=sim.cluster.log,
        samples=sim.samples,
        scalings=sim.scalings,
        replica_seconds={
            v.name: sim.cluster.replica_seconds(v.name, until=traffic.duration) for v in fleet.variants
        },
        end=sim.now,
        events=sim.events,
        aborted=aborted,
    )


def default_sample_interval(duration: float) -> float:
    """About 720 samples over the traffic, never more often than every 0.5 s."""
    return max(0.5, duration / 720)
