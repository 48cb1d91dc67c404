"""The one interface every lab policy implements, and what it may touch (`Sim`).

A policy is started once with the simulation (`start`), schedules its own timers (`sim.every`,
`sim.at`), reads what it would read live — Prometheus (`sim.prometheus`), and Kubernetes objects
(`sim.cluster`, read-only by convention) — and acts only through `sim.scale`, as a controller acts
through the API server. `initial` may ask for the replicas the run starts with (static-peak, oracle).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from services.lab import fleet as fleets
from services.lab.cluster import Cluster
from services.lab.observation import Prometheus, Reader
from services.lab.settings import Timing
from services.lab.traffic import Traffic


class Sim(Protocol):
    @property
    def now(self) -> float: ...

    @property
    def cluster(self) -> Cluster: ...

    @property
    def prometheus(self) -> Prometheus: ...

    @property
    def timing(self) -> Timing: ...

    def at(self, t: float, fn: Callable[[], None]) -> None:
        """Run `fn` at simulated time `t` (>= now)."""
        ...

    def every(self, period: float, fn: Callable[[], None], *, start: float = 0.0) -> None:
        """Run `fn` at `start`, `start + period`, … for as long as the run lasts."""
        ...

    def scale(self, variant: str, replicas: int) -> None:
        """Set a Deployment's spec replicas now (what a PATCH of deployments/scale does)."""
        ...

    def add_target(self, name: str, reader: Reader) -> None:
        """Expose metrics for Prometheus to scrape (the gateway's and the scaler's /metrics)."""
        ...


class Policy(Protocol):
    name: str
    observes: bool  # reads Prometheus: the run scrapes only when some policy does

    def initial(self, fleet: fleets.Fleet, traffic: Traffic) -> Mapping[str, int] | None:
        """Replicas per variant at the start (None: the fleet's `initialReplicas`)."""
        ...

    def start(self, sim: Sim) -> None: ...
