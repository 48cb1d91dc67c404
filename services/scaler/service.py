"""The scaler's I/O shell: NATS in, the pure core in the middle, Kubernetes and NATS out.

Tasks (one ``TaskGroup``; a crash in any fails the service loudly):

- three followers feed decoded events into one queue: ``wva.targets.>`` and ``wva.metrics.>`` from
  their last values, then live; ``wva.invalidate.>`` live only;
- a ticker adds a ``Tick`` every ``WVA_RECONCILE_INTERVAL`` (staleness, stabilization);
- the configuration source (ConfigMap watch or YAML file) swaps the core's configuration;
- the *core task* takes events one at a time, calls ``Scaler.handle(event, now)`` and hands the
  resulting actions, as one batch, to
- the *actuator task*, which applies ``ScaleAction``s, then publishes the batch's decisions with
  ``applied`` set from what really happened, writes VA status, records Events and updates gauges.

The core never waits on I/O, so a slow API server delays actuation, not decisions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec
import nats.errors
from nats.aio.client import Client

from services.scaler import configsource
from services.scaler import telemetry as m
from services.scaler.actions import Action, Event, FetchAction, ScaleAction, StatusAction, Tick
from services.scaler.actuation import KubeActuator, conditions_payload
from services.scaler.machine import Scaler
from services.scaler.scaling_config import ConfigSet, apply_configmap
from services.scaler.settings import ScalerSettings
from shared import kube, messages, natsio, streams
from shared.lifecycle import Runtime
from shared.messages import Decision, MetricsSnapshot, Target, TargetDeleted
from shared.observability import count_rejected
from shared.subjects import SubjectKind, Subjects

log = logging.getLogger("wva.scaler")

_QUEUE_LIMIT = 10_000


@dataclass
class _VAStatus:
    """What the VA's status should say (the last published decision, its conditions) and what was
    last written, so the API is patched only when something changed."""

    conditions: list[dict[str, Any]] = field(default_factory=list)
    decision: Decision | None = None
    written: dict[str, Any] | None = None


class Shell:
    """Everything stateful outside the core: the queues, the last status written per VA, gauges."""

    def __init__(self, runtime: Runtime, settings: ScalerSettings, actuator: KubeActuator) -> None:
        self.runtime = runtime
        self.settings = settings
        self.subjects: Subjects = runtime.subjects
        self.base = settings.saturation_base()
        self.core = Scaler(configs=ConfigSet(default=self.base), mode=cast(messages.ScalerMode, settings.scaler_mode))
        self.configs = ConfigSet(default=self.base)
        self.actuator = actuator
        self.events: asyncio.Queue[Event] = asyncio.Queue(maxsize=_QUEUE_LIMIT)
        self.batches: asyncio.Queue[list[Action]] = asyncio.Queue(maxsize=_QUEUE_LIMIT)
        self.targets: dict[tuple[str, str], Target] = {}
        self.statuses: dict[tuple[str, str], _VAStatus] = {}
        self.gauges = m.Gauges()
        self.fetches: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ inputs

    async def follow(self, kind: SubjectKind, decoder: messages.Decoder[Any], start: streams.Start, check: str) -> None:
        follower = streams.Follower(self.runtime.js, self.subjects.wildcard(kind), start=start)
        self.runtime.health.set(check, follower.caught_up.is_set)
        async for msg in follower:
            try:
                event = decoder.decode(msg.data)
            except messages.MessageError as exc:
                log.warning("skipping undecodable message on %s: %s", msg.subject, exc, extra={"subject": msg.subject})
                count_rejected(kind.value, exc.reason)
                continue
            if isinstance(event, Decision):
                continue
            await self.events.put(event)

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            await self.events.put(Tick())

    def on_config(self, data: Mapping[str, str] | None) -> None:
        update = apply_configmap(self.configs, data, base=self.base)
        for warning in update.warnings:
            log.warning("saturation config: %s", warning)
        if not update.applied:
            m.CONFIG_RELOADS.labels(outcome="invalid").inc()
            log.error(
                "invalid saturation config; keeping the one in force: %s",
                "; ".join(update.errors),
                extra={"errors": list(update.errors)},
            )
            return
        m.CONFIG_RELOADS.labels(outcome="applied").inc()
        self.configs = update.configs
        self.core.set_configs(update.configs)
        self.runtime.health.set("config", True)
        log.info("saturation config loaded", extra={"source": "none (defaults)" if data is None else "ConfigMap/file"})
        self.events.put_nowait(Tick())  # a new config takes effect now, not at the next tick

    # ------------------------------------------------------------------ core

    async def run_core(self) -> None:
        while True:
            event = await self.events.get()
            m.EVENTS.labels(kind=type(event).__name__).inc()
            if isinstance(event, Target):
                self.targets[(event.namespace, event.name)] = event
                self.gauges.current(event.namespace, event.name, event.spec_replicas)
            elif isinstance(event, TargetDeleted):
                self.targets.pop((event.namespace, event.name), None)
                self.statuses.pop((event.namespace, event.name), None)
                self.gauges.deleted(event.namespace, event.name)
            actions = self.core.handle(event, time.time())
            if actions:
                await self.batches.put(actions)

    # ------------------------------------------------------------------ outputs

    async def run_actuator(self) -> None:
        while True:
            batch = await self.batches.get()
            applied: dict[tuple[str, str], bool] = {}
            for action in batch:
                if isinstance(action, ScaleAction):
                    applied[(action.namespace, action.name)] = await self.scale(action)
                elif isinstance(action, FetchAction):
                    task = asyncio.create_task(self.fetch(action))
                    self.fetches.add(task)
                    task.add_done_callback(self.fetches.discard)
            changed: dict[tuple[str, str], None] = {}  # in order, once each: one status patch per VA
            for action in batch:
                if isinstance(action, Decision):
                    key = (action.namespace, action.name)
                    decision = msgspec.structs.replace(action, applied=applied.get(key, False))
                    await self.publish_decision(decision)
                    self.statuses.setdefault(key, _VAStatus()).decision = decision
                    changed[key] = None
                elif isinstance(action, StatusAction):
                    key = (action.namespace, action.name)
                    self.set_conditions(key, action)
                    changed[key] = None
            for key in changed:
                await self.write_status(key)

    async def scale(self, action: ScaleAction) -> bool:
        result = await self.actuator.scale(action)
        m.ACTUATIONS.labels(outcome=result.outcome).inc()
        fields = {
            "namespace": action.namespace,
            "va": action.name,
            "deployment": action.deployment,
            "replicas": action.replicas,
            "previous": result.previous,
            "outcome": result.outcome,
        }
        if result.applied:
            log.info("scaled %s/%s %s -> %s", action.namespace, action.deployment, result.previous, action.replicas, extra=fields)
            direction = "ScaledUp" if (result.previous or 0) < action.replicas else "ScaledDown"
            await self.actuator.record_event(
                namespace=action.namespace,
                va=action.name,
                reason=direction,
                message=f"wva scaled deployment {action.deployment} from {result.previous} to {action.replicas}",
            )
            return True
        if result.outcome != "no_op":
            log.warning("did not scale %s/%s: %s %s", action.namespace, action.deployment, result.outcome, result.detail, extra=fields)
            # Let the next evaluation decide afresh instead of waiting for a count that never comes.
            self.core.forget_pending(action.namespace, action.name)
        return result.outcome == "no_op"

    async def publish_decision(self, decision: Decision) -> None:
        m.DECISIONS.labels(reason=decision.reason).inc()
        self.gauges.decided(decision)
        log.info(
            "decision %s/%s %d -> %d %s",
            decision.namespace,
            decision.name,
            decision.current,
            decision.desired,
            decision.reason,
            extra={"namespace": decision.namespace, "va": decision.name, "reason": decision.reason,
                   "applied": decision.applied, "detail": decision.detail},
        )
        try:
            await natsio.publish(self.runtime.js, self.subjects.decisions(decision.namespace, decision.name), decision)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("could not publish decision: %s", exc, extra={"namespace": decision.namespace, "va": decision.name})

    def set_conditions(self, key: tuple[str, str], action: StatusAction) -> None:
        target = self.targets.get(key)
        entry = self.statuses.setdefault(key, _VAStatus())
        generation = target.va_generation if target is not None else 0
        entry.conditions = conditions_payload(
            action.conditions, entry.conditions, generation=generation, now=messages.utcnow()
        )

    async def write_status(self, key: tuple[str, str]) -> None:
        target, entry = self.targets.get(key), self.statuses.get(key)
        if target is None or entry is None:
            return
        status: dict[str, Any] = dict(entry.written or {})
        if entry.decision is not None:
            status["desiredOptimizedAlloc"] = {
                "accelerator": entry.decision.accelerator or target.accelerator,
                "numReplicas": entry.decision.desired,
                "lastRunTime": entry.decision.at.isoformat().replace("+00:00", "Z"),
            }
            status["actuation"] = {"applied": entry.decision.applied}
        if entry.conditions:
            status["conditions"] = entry.conditions
        if status == entry.written:
            return  # only when something changed
        if await self.actuator.write_status(key[0], key[1], status):
            entry.written = status

    async def fetch(self, action: FetchAction) -> None:
        """Ask the fetcher for a fresh snapshot; no responder or a timeout: the next cycle will do."""
        request = messages.FetchRequest(namespace=action.namespace, name=action.name, at=messages.utcnow(), fresh=True)
        nc: Client = self.runtime.nc
        try:
            reply = await nc.request(
                self.subjects.fetch(action.namespace, action.name),
                messages.encode(request),
                timeout=self.settings.fetch_request_timeout,
            )
            snapshot = messages.metrics_decoder.decode(reply.data)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            m.FETCH_REQUESTS.labels(outcome="no_reply").inc()
            log.info("no fresh snapshot for %s/%s (%s); relying on the next cycle", action.namespace, action.name,
                     type(exc).__name__)
            return
        except messages.MessageError as exc:
            m.FETCH_REQUESTS.labels(outcome="bad_reply").inc()
            count_rejected("fetch_reply", exc.reason)
            log.warning("undecodable fetch reply for %s/%s: %s", action.namespace, action.name, exc)
            return
        m.FETCH_REQUESTS.labels(outcome="ok").inc()
        if isinstance(snapshot, MetricsSnapshot):
            await self.events.put(snapshot)


async def main(runtime: Runtime) -> None:
    settings = cast(ScalerSettings, runtime.settings)
    api = await kube.api_client(settings.kubeconfig)
    shell = Shell(runtime, settings, KubeActuator(api))
    try:
        runtime.health.set("config", False)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(shell.follow(SubjectKind.TARGETS, messages.targets_decoder, "last_per_subject", "targets"))
            tg.create_task(shell.follow(SubjectKind.METRICS, messages.metrics_decoder, "last_per_subject", "metrics"))
            tg.create_task(shell.follow(SubjectKind.INVALIDATE, messages.events_decoder, "new", "invalidations"))
            tg.create_task(shell.run_core())
            tg.create_task(shell.run_actuator())
            tg.create_task(shell.tick())
            if settings.saturation_config:
                tg.create_task(configsource.poll_file(Path(settings.saturation_config), shell.on_config))
            else:
                tg.create_task(
                    configsource.watch_configmap(api, settings.config_namespace, settings.config_map_name, shell.on_config)
                )
    finally:
        for task in list(shell.fetches):
            task.cancel()
        await api.close()
