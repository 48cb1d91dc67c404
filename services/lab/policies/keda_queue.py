"""keda-queue: KEDA's Prometheus scaler on waiting requests, one ScaledObject per variant (docs/lab.md).

The trigger's query is the requests waiting for the variant: its pods' `vllm:num_requests_waiting`
plus the model's queue at the gateway (`inference_extension_flow_control_queue_size`, which every
variant's ScaledObject sees whole), with an `AverageValue` target of 5 per replica. KEDA serves it to
an HPA with default behaviour as an `External` metric, queried afresh at every HPA sync (15 s;
KEDA's metrics server asks the scaler on each request unless `useCachedMetrics` is set). KEDA's own
loop polls the trigger every `pollingInterval` (30 s): it activates a variant at zero replicas when
the value is above the activation threshold (0), and returns it to zero after `cooldownPeriod`
(300 s) without activity — only for variants whose `minReplicaCount` is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from services.lab import fleet as fleets
from services.lab import hpa
from services.lab.observation import GATEWAY_TARGET
from services.lab.policies.base import Sim
from services.lab.traffic import Traffic

TARGET_WAITING: Final = 5.0
POLLING_INTERVAL: Final = 30.0
COOLDOWN: Final = 300.0
ACTIVATION_THRESHOLD: Final = 0.0


class KedaQueue:
    observes = True

    def __init__(self, name: str = "keda-queue") -> None:
        self.name = name
        self._hpas: dict[str, hpa.HPA] = {}
        self._last_active: dict[str, float] = {}

    def initial(self, fleet: fleets.Fleet, traffic: Traffic) -> Mapping[str, int] | None:
        return None

    def start(self, sim: Sim) -> None:
        for v in sim.cluster.fleet.variants:
            self._hpas[v.name] = hpa.HPA(min_replicas=max(1, v.min_replicas), max_replicas=v.max_replicas)
            self._last_active[v.name] = sim.now
        sim.every(sim.timing.hpa_sync, lambda: self._hpa_sync(sim))
        sim.every(sim.timing.keda_polling, lambda: self._poll(sim))

    def waiting(self, sim: Sim, variant: str) -> float | None:
        """The trigger's query at `sim.now` (None: no series at all)."""
        prom = sim.prometheus
        values = [prom.instant(p.name, "waiting", sim.now) for p in sim.cluster.pods(variant)]
        values.append(prom.instant(GATEWAY_TARGET, "queue_size", sim.now))
        present = [v for v in values if v is not None]
        return sum(present) if present else None

    def _hpa_sync(self, sim: Sim) -> None:
        for name, autoscaler in self._hpas.items():
            d = sim.cluster.deployments[name]
            value = self.waiting(sim, name)
            proposal = None
            if value is not None:
                proposal = hpa.external_metric_replicas(
                    status_replicas=len(d.pods), value=value, target=TARGET_WAITING
                )
            desired = autoscaler.reconcile(now=sim.now, current=d.spec, proposal=proposal)
            if desired != d.spec:
                sim.scale(name, desired)

    def _poll(self, sim: Sim) -> None:
        for v in sim.cluster.fleet.variants:
            value = self.waiting(sim, v.name)
            active = value is not None and value > ACTIVATION_THRESHOLD
            if active:
                self._last_active[v.name] = sim.now
            spec = sim.cluster.deployments[v.name].spec
            if spec == 0 and active:
                sim.scale(v.name, max(1, v.min_replicas))
            elif (
                spec > 0
                and not active
                and v.min_replicas == 0
                and sim.now - self._last_active[v.name] >= COOLDOWN
            ):
                sim.scale(v.name, 0)
