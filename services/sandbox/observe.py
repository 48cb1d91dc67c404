"""What a sandbox run saw: wva's messages from NATS plus the emulated cluster's own state, over time.

`Observer` is fed two ways:

- `handle(subject, data, t)` with every message on `<prefix>.>` (what wva believed: targets, metrics
  snapshots, decisions, and with several replicas which replica holds which partitions); it returns a
  `DecisionMark` for each decision so a view can show it;
- `sample(t, cluster)` once a second (what the cluster did: offered load, spec and ready replicas,
  requests served and their latencies, measured at the emulated pods).

Both append to a `Timeline`, which the report and the expectation checks read. `follow` is the NATS
side: a plain subscription on `<prefix>.>`. Times are seconds since the load started.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

import nats.aio.client
import nats.aio.msg
import nats.aio.subscription

from services.sandbox import cluster as clusters
from services.sandbox import load, router, scenario
from services.sandbox.kubeapi import resources as kube_resources
from shared import messages as m
from shared.observability import count_rejected

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class VariantInfo:
    name: str
    va: str
    namespace: str
    model_id: str
    cost: float
    min_replicas: int
    max_replicas: int
    initial_replicas: int


@dataclass(frozen=True, kw_only=True)
class DecisionMark:
    t: float
    variant: str
    current: int
    desired: int
    reason: str
    applied: bool
    detail: str = ""
    outcome: str = ""  # what actuation did: "applied", "failed", … ("" when this decision did not actuate)
    replica: str = ""  # the scaler replica that decided ("" without leases)

    @property
    def is_scaling(self) -> bool:
        """A replica change that was made. The scaler publishes a step once, with its outcome; the
        decisions that follow until the Deployment shows it carry its count (applied, no outcome,
        a hold's reason) and are not changes of their own. A stage of a paced scale-down is one, with
        the reason `scale_down_paced` (the rest of the decrease is still stabilizing)."""
        if self.desired == self.current:
            return False
        if self.outcome:
            return self.outcome == "applied"
        return self.applied and not self.reason.startswith("hold_")

    @property
    def is_step(self) -> bool:
        """A decision to change this VA's replicas, applied or not; anything else holds it."""
        return self.is_scaling or (self.desired != self.current and not self.reason.startswith("hold_"))


@dataclass(frozen=True, kw_only=True)
class VariantPoint:
    spec: int
    ready: int
    desired: int | None  # the last decision's, None before the first
    kv: float | None  # mean KV-cache usage over replicas, as wva's last snapshot had it
    waiting: float | None  # queued requests summed over replicas, ditto
    ttft: float | None  # average TTFT of the last snapshot (seconds)
    served_rps: float  # completed requests per second, measured at the pods


@dataclass(frozen=True, kw_only=True)
class Sample:
    t: float
    load: dict[str, float]  # model id -> offered requests per second
    variants: dict[str, VariantPoint]


@dataclass
class LiveVariant:
    """The latest of everything about one variant (for the live view and the next sample)."""

    info: VariantInfo
    spec: int = 0
    ready: int = 0
    kv: float | None = None
    waiting: float | None = None
    ttft: float | None = None
    snapshot_t: float | None = None
    snapshot_status: str = ""
    served_rps: float = 0.0
    decision: DecisionMark | None = None


@dataclass
class Timeline:
    scenario: str
    duration: float
    variants: list[VariantInfo]
    models: list[str]
    samples: list[Sample] = field(default_factory=list)
    decisions: list[DecisionMark] = field(default_factory=list)
    # variant -> (finished at, ttft, e2e) of every completed request seen at the pods
    completions: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)  # model id -> requests offered
    # model id -> requests that waited at the gateway (the router's queue) before a replica took them
    queued: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)  # model id -> timed out at the gateway / rejected
    rejected_messages: int = 0
    first_snapshot: float | None = None  # when the first metrics snapshot came: the fetcher's phase
    attribution: str = ""  # what results on this load must credit (a recorded trace's licence)
    # with several replicas: (t, service, replica, partitions it holds now), as each said it
    ownership: list[tuple[float, str, str, tuple[str, ...]]] = field(default_factory=list)

    def owners(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """Per service, each replica's latest word on the partitions it holds."""
        latest: dict[str, dict[str, tuple[str, ...]]] = {}
        for _, service, replica, owned in self.ownership:
            latest.setdefault(service, {})[replica] = owned
        return latest


def scenario_attribution(spec: scenario.Scenario) -> str:
    """The attributions of the recorded traces the scenario replays, one line each."""
    return "\n".join(dict.fromkeys(a for m in spec.models if (a := load.attribution(m.load))))


def variant_infos(spec: scenario.Scenario) -> list[VariantInfo]:
    return [
        VariantInfo(
            name=v.name,
            va=v.va_name,
            namespace=model.namespace,
            model_id=model.id,
            cost=float(v.cost),
            min_replicas=v.min_replicas,
            max_replicas=v.max_replicas,
            initial_replicas=v.replicas,
        )
        for model, v in spec.variants()
    ]


class Observer:
    def __init__(self, spec: scenario.Scenario) -> None:
        infos = variant_infos(spec)
        self.timeline = Timeline(
            scenario=spec.name,
            duration=spec.duration,
            variants=infos,
            models=[mo.id for mo in spec.models],
            attribution=scenario_attribution(spec),
        )
        self.live: dict[str, LiveVariant] = {
            i.name: LiveVariant(info=i, spec=i.initial_replicas) for i in infos
        }
        self._by_va = {(i.namespace, i.va): i.name for i in infos}
        self.load: dict[str, float] = {mo.id: 0.0 for mo in spec.models}
        self._pod_variant: dict[router.PodKey, str] = {}
        self._succeeded: dict[router.PodKey, int] = {}
        self._last_sample_t: float | None = None
        self._owner_at: dict[tuple[str, str], datetime] = {}

    def group_of(self, variant: str) -> str:
        """The variant's model group as a person reads it: `<namespace>/<model name without org>`."""
        info = self.live[variant].info
        return f"{info.namespace}/{info.model_id.split('/')[-1]}"

    # -- NATS side

    def handle(self, subject: str, data: bytes, t: float) -> DecisionMark | None:
        try:
            message = m.any_decoder.decode(data)
        except m.MessageError as exc:
            count_rejected("sandbox", exc.reason)
            self.timeline.rejected_messages += 1
            log.warning("undecodable message on %s: %s", subject, exc)
            return None
        if isinstance(message, m.Ownership):
            said = self._owner_at.get((message.namespace, message.name))
            if said is None or message.at > said:  # a stored word read late is not news
                self._owner_at[(message.namespace, message.name)] = message.at
                self.timeline.ownership.append((t, message.namespace, message.name, message.owned))
            return None
        name = self._by_va.get((message.namespace, message.name))
        if name is None:
            return None
        live = self.live[name]
        match message:
            case m.MetricsSnapshot():
                kv = [r.kv_cache_usage for r in message.replicas if r.kv_cache_usage is not None]
                waiting = [r.waiting for r in message.replicas if r.waiting is not None]
                live.kv = sum(kv) / len(kv) if kv else None
                live.waiting = sum(waiting) if waiting else None
                live.ttft = message.allocation.ttft_seconds
                live.snapshot_t = t
                live.snapshot_status = message.status
                if self.timeline.first_snapshot is None and t >= 0:
                    self.timeline.first_snapshot = t
            case m.Decision():
                mark = DecisionMark(
                    t=t,
                    variant=name,
                    current=message.current,
                    desired=message.desired,
                    reason=message.reason,
                    applied=message.applied,
                    detail=message.detail,
                    outcome=message.outcome,
                    replica=message.replica,
                )
                live.decision = mark
                self.timeline.decisions.append(mark)
                return mark
        return None

    # -- cluster side

    def sample(self, t: float, cluster: clusters.Cluster) -> Sample:
        """Read the emulated cluster now and append a sample (call about once a second)."""
        dt = None if self._last_sample_t is None else t - self._last_sample_t
        self._last_sample_t = t
        for generator in cluster.generators:
            self.load[generator.model_id] = (
                generator.profile.rate(max(t, 0.0)) if t <= self.timeline.duration else 0.0
            )
            self.timeline.sent[generator.model_id] = generator.sent + generator.refused
            counters = cluster.router.counters.get(generator.model_id)
            if counters is not None:
                self.timeline.queued[generator.model_id] = counters.queued
                self.timeline.refused[generator.model_id] = counters.timed_out + counters.rejected
        served = dict.fromkeys(self.live, 0)
        for key, server in cluster.runtime.servers().items():
            variant = self._variant_of(key, cluster)
            if variant is None:
                continue
            stats = server.replica.stats
            new = stats.requests_succeeded - self._succeeded.get(key, 0)
            self._succeeded[key] = stats.requests_succeeded
            if new <= 0:
                continue
            served[variant] += new
            done = list(server.replica.completions)[-new:]
            self.timeline.completions.setdefault(variant, []).extend((t, c.ttft, c.e2e) for c in done)
        ready = set(cluster.runtime.ready_pods())
        points = {}
        for name, live in self.live.items():
            live.spec = cluster.spec_replicas(name)
            live.ready = sum(1 for key in ready if self._variant_of(key, cluster) == name)
            if dt is not None and dt > 0:
                live.served_rps = served[name] / dt
            points[name] = VariantPoint(
                spec=live.spec,
                ready=live.ready,
                desired=live.decision.desired if live.decision else None,
                kv=live.kv,
                waiting=live.waiting,
                ttft=live.ttft,
                served_rps=live.served_rps,
            )
        sample = Sample(t=t, load=dict(self.load), variants=points)
        self.timeline.samples.append(sample)
        return sample

    def _variant_of(self, key: router.PodKey, cluster: clusters.Cluster) -> str | None:
        if key not in self._pod_variant:
            namespace, name = key.split("/", 1)
            pod = cluster.store_api.store.find(kube_resources.PODS, namespace, name)
            if pod is None:
                return None
            variant = (pod["metadata"].get("labels") or {}).get(clusters.VARIANT_LABEL)
            if variant not in self.live:
                return None
            self._pod_variant[key] = variant
        return self._pod_variant[key]


async def follow(
    nc: nats.aio.client.Client,
    subject: str,
    observer: Observer,
    *,
    clock: asyncio.AbstractEventLoop,
    origin: float,
) -> nats.aio.subscription.Subscription:
    """Subscribe `observer` to `subject`, with times `clock.time() - origin`. The caller
    unsubscribes (or closes the connection)."""

    async def handler(msg: nats.aio.msg.Msg) -> None:
        observer.handle(msg.subject, msg.data, clock.time() - origin)

    return await nc.subscribe(subject, cb=handler)
