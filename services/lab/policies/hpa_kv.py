"""hpa-kv: one Kubernetes HPA per variant on the pods' average KV-cache usage (docs/lab.md).

What users run today without wva: a `Pods` metric `vllm:kv_cache_usage_perc` (through
prometheus-adapter, an instant query of Prometheus' latest scrape) with an `AverageValue` target of
0.70, HPA defaults (sync every 15 s, tolerance 0.1, scale up by max(100 %, 4 pods) per 15 s, scale
down after a 300 s stabilization window), bounds from the fleet (at least 1: an HPA cannot go to
zero). No cost awareness: every variant scales on its own pods alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from services.lab import fleet as fleets
from services.lab import hpa
from services.lab.policies.base import Sim
from services.lab.traffic import Traffic

TARGET_KV: Final = 0.70


class HpaKv:
    observes = True

    def __init__(self, name: str = "hpa-kv", *, target: float = TARGET_KV) -> None:
        self.name = name
        self.target = target
        self._hpas: dict[str, hpa.HPA] = {}

    def initial(self, fleet: fleets.Fleet, traffic: Traffic) -> Mapping[str, int] | None:
        return None

    def start(self, sim: Sim) -> None:
        for v in sim.cluster.fleet.variants:
            self._hpas[v.name] = hpa.HPA(min_replicas=max(1, v.min_replicas), max_replicas=v.max_replicas)
        sim.every(sim.timing.hpa_sync, lambda: self._sync(sim))

    def _sync(self, sim: Sim) -> None:
        for name, autoscaler in self._hpas.items():
            pods = sim.cluster.pods(name)
            values = {p.name: sim.prometheus.instant(p.name, "kv_cache_usage", sim.now) for p in pods}
            current = sim.cluster.deployments[name].spec
            proposal = hpa.pods_metric_replicas(current=current, values=values, target=self.target)
            desired = autoscaler.reconcile(now=sim.now, current=current, proposal=proposal)
            if desired != current:
                sim.scale(name, desired)
