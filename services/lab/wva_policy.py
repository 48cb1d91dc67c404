"""The production scaler core as a lab policy — every line of the lab that touches the core is here.

`WvaPolicy` drives `services.scaler.core.Scaler` exactly as the scaler's shell (services/scaler/
service.py) does, and feeds it the messages the real watcher and fetcher would publish:

- a `Target` per variant whenever what the watcher builds from the Deployment and its pods changes
  (spec, ready and updated replicas, member pods with their ready flags, the Deployment generation,
  which every spec change bumps), and an `Invalidation(reason="replicas_changed")` after it when
  the spec replicas changed — services/watcher/targets.py and changes.py;
- a `MetricsSnapshot` per variant every fetch interval, and for one variant shortly (the fetcher's
  20 ms debounce) after an invalidation of it (the fetcher refreshes an invalidated VA by itself) or
  after the core nudges it with a `FetchAction` — built by the fetcher's own pure assembly from what
  Prometheus would answer (`observation.snapshot`);
- a `Tick` every reconcile interval.

Its actions: `ScaleAction` is the shell's read-check-write (refused when the Deployment's generation
moved since the decision, skipped when it is a no-op), whose outcome goes back to the core as
`ScaleApplied`/`ScaleFailed`, as the shell's does; `Decision` sets the VA's `wva_desired_replicas` gauge, which Prometheus
scrapes from the scaler like any target. In `hpa` mode (`wva-v1`) nothing is patched: one HPA per
variant (services.lab.hpa, default behaviour) follows the gauge through an `External` metric with an
`AverageValue` target of 1, as deploy/overlays/hpa/hpa-sample.yaml sets it up.
Events the core's actions cause (a scale's new Target) queue behind the current batch, as the shell's
queue orders them.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import msgspec
import yaml

from services.lab import PolicyError, hpa, observation
from services.lab import fleet as fleets
from services.lab.cluster import Deployment
from services.lab.policies.base import Sim
from services.lab.simulation import EPOCH
from services.lab.traffic import Traffic
from services.scaler import configsource
from services.scaler.actions import Action, FetchAction, ScaleAction
from services.scaler.core import Scaler
from services.scaler.events import Event, ScaleApplied, ScaleFailed, Tick
from services.scaler.scaling_config import ConfigSet, ScalingConfigError, parse_configmap
from services.scaler.settings import ScalerSettings
from shared.messages import Decision, Invalidation, MetricsSnapshot, PodRef, ScaleTarget, Target

REFRESH_DELAY: Final = 0.02  # services/fetcher/fetching.py DEBOUNCE: a refresh waits this long for company
TEMPLATE_HASH: Final = "lab"  # the pod template never changes in the lab
V1_RECONCILE: Final = 15.0  # WVA evaluated every 15 s
SCALER_TARGET: Final = "wva-scaler"  # the scaler's /metrics, as Prometheus scrapes it

Mode = Literal["scale", "hpa"]


@dataclass(frozen=True, kw_only=True)
class WvaSpec:
    """A wva policy as the command line names it (picklable, for a worker process)."""

    name: str
    v1: bool = False  # wva-v1: V1 thresholds, one replica per step, through an HPA
    config: Mapping[str, str] | None = None  # saturation ConfigMap data (a --policy wva:FILE)
    source: str = ""  # the file it came from, for messages


def read_config(path: Path) -> dict[str, str]:
    """A `--policy wva:FILE`: a saturation-scaling-config ConfigMap, or its `data`, as the scaler's
    WVA_SATURATION_CONFIG file; validated at once so a bad file fails before any run."""
    try:
        data = configsource.file_data(path.read_text())
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    try:
        parse_configmap(data)
    except ScalingConfigError as exc:
        raise PolicyError(f"{path}: invalid saturation config: {exc}") from None
    return data


def _settings(spec: WvaSpec, *, fetch_interval: float, stabilization: float) -> ScalerSettings:
    if spec.v1:
        # WVA's V1 scaled one replica at a time and left scale-down pacing to the HPA's 300 s window.
        return ScalerSettings(
            fetch_interval=fetch_interval, scale_down_stabilization=0.0, scale_up_step="one"
        )
    return ScalerSettings(fetch_interval=fetch_interval, scale_down_stabilization=stabilization)


def build(
    spec: WvaSpec, *, fetch_interval: float, stabilization: float, reconcile_interval: float
) -> WvaPolicy:
    base = _settings(spec, fetch_interval=fetch_interval, stabilization=stabilization).scaling_base()
    if spec.v1:
        base = dataclasses.replace(base, analyzer="v1")  # WVA as shipped: its V1 rules
    configs = ConfigSet(default=base)
    if spec.config is not None:
        try:
            configs = parse_configmap(spec.config, base=base)
        except ScalingConfigError as exc:
            raise PolicyError(f"{spec.source or spec.name}: invalid saturation config: {exc}") from None
    return WvaPolicy(
        name=spec.name,
        configs=configs,
        mode="hpa" if spec.v1 else "scale",
        reconcile_interval=V1_RECONCILE if spec.v1 else reconcile_interval,
    )


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(EPOCH + t, UTC)


class WvaPolicy:
    observes = True

    def __init__(self, *, name: str, configs: ConfigSet, mode: Mode, reconcile_interval: float) -> None:
        self.name = name
        self.mode: Mode = mode
        self.reconcile_interval = reconcile_interval
        self.core = Scaler(configs=configs, base=configs.default, mode=mode)
        self.decisions: list[Decision] = []
        self._events: collections.deque[Event] = collections.deque()
        self._busy = False
        self._published: dict[str, Target] = {}  # what the watcher last published (the fetcher tracks it)
        self._refreshing: set[str] = set()
        self._desired: dict[str, int] = {}  # wva_desired_replicas per VA
        self._hpas: dict[str, hpa.HPA] = {}
        self._sim: Sim | None = None

    def initial(self, fleet: fleets.Fleet, traffic: Traffic) -> Mapping[str, int] | None:
        return None

    @property
    def sim(self) -> Sim:
        assert self._sim is not None, "start() first"
        return self._sim

    def start(self, sim: Sim) -> None:
        self._sim = sim
        sim.cluster.on_change(self._watch)
        self._watch(sim.now)
        sim.every(sim.timing.fetch_interval, self._fetch_cycle, start=sim.timing.fetch_start)
        sim.every(self.reconcile_interval, lambda: self._feed(Tick()), start=self.reconcile_interval)
        if self.mode == "hpa":
            sim.add_target(SCALER_TARGET, self._gauges)
            for v in sim.cluster.fleet.variants:
                self._hpas[v.name] = hpa.HPA(min_replicas=max(1, v.min_replicas), max_replicas=v.max_replicas)
            sim.every(sim.timing.hpa_sync, self._hpa_sync)

    # ------------------------------------------------------------------ the watcher's side

    def _target(self, d: Deployment, now: float) -> Target:
        v, cluster = d.variant, self.sim.cluster
        pods = tuple(
            PodRef(name=p.name, ready=p.ready, phase="Running")
            for p in sorted(d.pods.values(), key=lambda p: p.name)
        )
        ready = sum(1 for p in pods if p.ready)
        return Target(
            namespace=cluster.fleet.namespace,
            name=v.name,
            at=_at(now),
            model_id=cluster.model_id,
            variant_cost=v.cost_per_hour,
            accelerator=v.accelerator,
            min_replicas=v.min_replicas,
            max_replicas=v.max_replicas,
            scale_target=ScaleTarget(kind="Deployment", name=v.name),
            resolved=True,
            deployment_generation=d.generation,
            template_hash=TEMPLATE_HASH,
            spec_replicas=d.spec,
            ready_replicas=ready,
            updated_replicas=len(pods),
            available_replicas=ready,
            pods=pods,
            va_generation=1,
        )

    def _watch(self, now: float) -> None:
        """What the watcher publishes after a change: new targets, then their invalidations."""
        for name in sorted(self.sim.cluster.deployments):
            new = self._target(self.sim.cluster.deployments[name], now)
            old = self._published.get(name)
            if old is not None and msgspec.structs.replace(new, at=old.at) == old:
                continue
            self._published[name] = new
            self._feed(new)
            if old is not None and old.spec_replicas != new.spec_replicas:
                self._feed(
                    Invalidation(
                        namespace=new.namespace,
                        name=name,
                        at=_at(now),
                        reason="replicas_changed",
                        deployment_generation=new.deployment_generation,
                        template_hash=new.template_hash,
                    )
                )
                self._schedule_refresh(name)  # the fetcher refreshes an invalidated VA by itself

    # ------------------------------------------------------------------ the fetcher's side

    def _snapshot(self, name: str) -> MetricsSnapshot:
        sim = self.sim
        return observation.snapshot(
            self._published[name], sim.prometheus, at=sim.now, rate_window=sim.timing.rate_window, epoch=EPOCH
        )

    def _fetch_cycle(self) -> None:
        for name in sorted(self._published):
            self._feed(self._snapshot(name))

    def _schedule_refresh(self, name: str) -> None:
        if name not in self._refreshing:
            self._refreshing.add(name)
            self.sim.at(self.sim.now + REFRESH_DELAY, lambda: self._refresh(name))

    def _refresh(self, name: str) -> None:
        self._refreshing.discard(name)
        if name in self._published:
            self._feed(self._snapshot(name))

    # ------------------------------------------------------------------ the scaler's shell

    def _feed(self, event: Event) -> None:
        self._events.append(event)
        if self._busy:
            return  # the current batch's actions first, as the shell's queue orders them
        self._busy = True
        try:
            while self._events:
                actions = self.core.handle(self._events.popleft(), EPOCH + self.sim.now)
                self._act(actions)
        finally:
            self._busy = False

    def _act(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, ScaleAction):
                self._scale(action)
            elif isinstance(action, FetchAction):
                self._schedule_refresh(action.name)
        for action in actions:
            if isinstance(action, Decision):
                self.decisions.append(action)
                self._desired[action.name] = action.desired

    def _scale(self, action: ScaleAction) -> None:
        """The shell's read-check-write, and its outcome back to the core as an event."""
        d = self.sim.cluster.deployments.get(action.deployment)
        outcome: Event
        if d is None:
            outcome = ScaleFailed(action.namespace, action.name, action.replicas, "not_found", "no such Deployment")
        elif d.generation != action.expected_generation:
            detail = f"generation {d.generation} != decided-on {action.expected_generation}"
            outcome = ScaleFailed(action.namespace, action.name, action.replicas, "target_moved", detail)
        elif d.spec == action.replicas:
            outcome = ScaleApplied(action.namespace, action.name, action.replicas, "no_op")
        else:
            self.sim.scale(action.deployment, action.replicas)
            outcome = ScaleApplied(action.namespace, action.name, action.replicas)
        self._feed(outcome)

    # ------------------------------------------------------------------ hpa mode

    def _gauges(self, now: float) -> dict[str, float]:
        return {f"desired:{name}": float(value) for name, value in sorted(self._desired.items())}

    def _hpa_sync(self) -> None:
        sim = self.sim
        for name, autoscaler in self._hpas.items():
            d = sim.cluster.deployments[name]
            value = sim.prometheus.instant(SCALER_TARGET, f"desired:{name}", sim.now)
            proposal = None
            if value is not None:
                proposal = hpa.external_metric_replicas(status_replicas=len(d.pods), value=value, target=1.0)
            desired = autoscaler.reconcile(now=sim.now, current=d.spec, proposal=proposal)
            if desired != d.spec:
                sim.scale(name, desired)
