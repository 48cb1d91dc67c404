"""The scaler's I/O shell: NATS and Kubernetes in, the pure core in the middle, Kubernetes and NATS out.

Tasks (one ``TaskGroup``; a crash in any fails the service loudly):

- the configuration source (ConfigMap watch or YAML file) and three followers feed one queue of
  events: ``wva.targets.>`` and ``wva.metrics.>`` from their last values, then live;
  ``wva.invalidate.>`` live only. Followers start once the configuration is known, after a
  ``Started`` event that tells the core where they begin (recorded in its decisions, for replay);
- a ticker adds a ``Tick`` every ``WVA_RECONCILE_INTERVAL``;
- the *core task* takes events one at a time, calls ``Scaler.handle(event, now, seq=…)`` and hands
  each action to the task that performs it, never waiting on I/O itself;
- the *actuator* checks each ``ScaleAction`` against the VariantAutoscaling in the API (``authority``)
  and patches ``deployments/scale``; its outcome goes back into the core's queue as an event;
- the *publisher* puts decisions on ``wva.decisions``; the *status writer* writes the latest status of
  each VA (latest wins; a failed write is retried with a backoff).

The shell keeps no copy of the core's state: it holds queues, gauges and the statuses not yet written.

Several replicas (``WVA_LEASE_BACKEND`` nats or kubernetes, docs/design.md §11): the core is this replica's
(``Decision.replica``). Before following, the shell feeds it the last decision of every VA on the
stream; its events follower then reads invalidations, every decision and this replica's own
``Ownership`` messages in one consumer, from where following began, and the leases start. The core
decides only for the groups its Ownership names; the shell fences what reaches Kubernetes: right
before each PATCH, and before each status write, it asks the leases whether this replica still holds
the group's partition with time to spare, and refuses (``fenced``) otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import nats.errors

from services.scaler import authority as authority_mod
from services.scaler import configsource, telemetry
from services.scaler.actions import (
    Action,
    ConfigReport,
    FetchAction,
    Forget,
    InputWarning,
    ScaleAction,
    StatusAction,
)
from services.scaler.actuation import Fence, KubeActuator
from services.scaler.core import Scaler
from services.scaler.events import ConfigData, Event, ScaleApplied, ScaleFailed, Started, Tick
from services.scaler.settings import ScalerSettings
from shared import kube, messages, streams
from shared.intake import Intake
from shared.lifecycle import Runtime
from shared.messages import Decision, Target, VAKey, va_key
from shared.partitions import partition_of
from shared.subjects import SubjectKind, Subjects
from shared.variantautoscaling import va_label_selector

log = logging.getLogger("wva.scaler")

_QUEUE_LIMIT = 10_000
_STATUS_RETRY = 5.0


class Shell:
    """Everything stateful outside the core: queues, gauges, statuses waiting to be written."""

    def __init__(
        self,
        runtime: Runtime,
        settings: ScalerSettings,
        actuator: KubeActuator,
        authority: authority_mod.Authority,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.subjects: Subjects = runtime.subjects
        self.replica = runtime.identity if runtime.leases is not None else ""
        self.core = Scaler(
            base=settings.scaling_base(), mode=cast(messages.ScalerMode, settings.scaler_mode), replica=self.replica
        )
        self.actuator = actuator
        self.authority = authority
        self.events: asyncio.Queue[tuple[Event, int | None]] = asyncio.Queue(maxsize=_QUEUE_LIMIT)
        self.scales: asyncio.Queue[ScaleAction] = asyncio.Queue(maxsize=_QUEUE_LIMIT)
        self.decisions: asyncio.Queue[Decision] = asyncio.Queue(maxsize=_QUEUE_LIMIT)
        self.statuses: dict[VAKey, StatusAction] = {}  # latest not yet written, per VA
        self.status_ready = asyncio.Event()
        self.configured = asyncio.Event()
        self.gauges = telemetry.GAUGES
        self.nudges: set[asyncio.Task[None]] = set()
        self.intake = Intake(runtime.subjects)  # every message goes through the one rule (shared/intake.py)

    # ------------------------------------------------------------------ inputs

    async def follow(self, kind: SubjectKind, decoder: messages.Decoder[Any], start: streams.Start, check: str) -> None:
        await self.consume(streams.Follower(self.runtime.js, self.subjects.wildcard(kind), start=start), decoder, check)

    async def follow_events(self, after: int) -> None:
        """Invalidations, and with leases every decision and this replica's Ownership, in stream order."""
        if not self.replica:
            await self.follow(SubjectKind.INVALIDATE, messages.events_decoder, "new", "invalidations")
            return
        wanted = [
            self.subjects.wildcard(SubjectKind.INVALIDATE),
            self.subjects.wildcard(SubjectKind.DECISIONS),
            self.subjects.owners(self.runtime.name, self.replica),
        ]
        await self.consume(streams.Follower(self.runtime.js, wanted, start="after", after=after), messages.events_decoder,
                           "invalidations")

    async def consume(self, follower: streams.Follower, decoder: messages.Decoder[Any], check: str) -> None:
        self.runtime.health.set(check, follower.caught_up.is_set)
        async for msg in follower:
            event = self.intake.accept(msg.subject, msg.data, decoder=decoder)
            if event is not None and (self.replica or not isinstance(event, Decision)):
                await self.events.put((event, msg.metadata.sequence.stream))

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            await self.events.put((Tick(), None))

    def on_config(self, data: Mapping[str, str] | None) -> None:
        self.events.put_nowait((ConfigData(data, source="ConfigMap/file"), None))

    async def started(self) -> int:
        """Tell the core where its followers begin, before they deliver anything; with leases, hand it
        the last decision of every VA up to there. Returns where the events stream begins."""
        last = []
        for name in (streams.TARGETS, streams.METRICS, streams.EVENTS):
            info = await self.runtime.js.stream_info(self.subjects.stream_name(name))
            last.append(info.state.last_seq)
        await self.events.put((Started(targets=last[0], metrics=last[1], events=last[2]), None))
        if self.replica:
            for msg in await streams.last_values(self.runtime.js, self.subjects.wildcard(SubjectKind.DECISIONS), upto=last[2]):
                decision = self.intake.accept(msg.subject, msg.data, decoder=messages.events_decoder)
                if isinstance(decision, Decision):
                    await self.events.put((decision, msg.seq))
        return last[2]

    def fence(self, namespace: str, model_id: str) -> Fence:
        """Why this replica may not write for the group now ("" when it may): asked right before each
        write, it holds with no lease backend, and otherwise only while the lease is valid."""
        leases = self.runtime.leases

        def why() -> str:
            if leases is None:
                return ""
            partition = str(partition_of(namespace, model_id, self.settings.partitions))
            if leases.valid(partition):
                return ""
            return f"this replica's lease on partition {partition} is lost or about to expire"

        return why

    # ------------------------------------------------------------------ core

    async def run_core(self) -> None:
        while True:
            event, seq = await self.events.get()
            telemetry.EVENTS.labels(kind=type(event).__name__).inc()
            if isinstance(event, Target):
                self.gauges.current(event.namespace, event.name, event.spec_replicas)
            for action in self.core.handle(event, time.time(), seq=seq):
                await self.dispatch(action)

    async def dispatch(self, action: Action) -> None:
        if isinstance(action, Decision):
            await self.decisions.put(action)
        elif isinstance(action, ScaleAction):
            await self.scales.put(action)
        elif isinstance(action, StatusAction):
            self.statuses[va_key(action.namespace, action.name)] = action
            self.status_ready.set()
        elif isinstance(action, FetchAction):
            task = asyncio.create_task(self.nudge(action))
            self.nudges.add(task)
            task.add_done_callback(self.nudges.discard)
        elif isinstance(action, ConfigReport):
            self.on_config_report(action)
        elif isinstance(action, InputWarning):
            telemetry.INPUT_WARNINGS.labels(reason=action.reason).inc()
            log.warning("%s/%s: %s", action.namespace, action.name, action.detail, extra={"reason": action.reason})
        elif isinstance(action, Forget):
            self.gauges.deleted(action.namespace, action.name)
            self.statuses.pop(va_key(action.namespace, action.name), None)

    def on_config_report(self, report: ConfigReport) -> None:
        for warning in report.warnings:
            log.warning("scaling config: %s", warning)
        if not report.applied:
            telemetry.CONFIG_RELOADS.labels(outcome="invalid").inc()
            log.error(
                "invalid scaling config; keeping the one in force: %s",
                "; ".join(report.errors),
                extra={"errors": list(report.errors)},
            )
        else:
            telemetry.CONFIG_RELOADS.labels(outcome="applied").inc()
            log.info("scaling config loaded", extra={"source": report.source})
        self.runtime.health.set("config", True)
        self.configured.set()

    # ------------------------------------------------------------------ outputs

    async def run_actuator(self) -> None:
        """Serial, in the core's order: a VA's steps land in the order they were decided."""
        while True:
            action = await self.scales.get()
            await self.events.put((await self.scale(action), None))

    async def scale(self, action: ScaleAction) -> ScaleApplied | ScaleFailed:
        fields = {"namespace": action.namespace, "va": action.name, "deployment": action.deployment, "replicas": action.replicas}
        refusal = self.authority.refusal(action)
        if refusal:
            telemetry.ACTUATIONS.labels(outcome="refused").inc()
            log.warning("refused to scale %s/%s: %s", action.namespace, action.deployment, refusal, extra=fields)
            return ScaleFailed(action.namespace, action.name, action.replicas, "refused", refusal)
        result = await self.actuator.scale(action, fence=self.fence(action.namespace, action.model_id))
        telemetry.ACTUATIONS.labels(outcome=result.outcome).inc()
        if result.outcome == "applied":
            log.info("scaled %s/%s %s -> %s", action.namespace, action.deployment, result.previous, action.replicas,
                     extra={**fields, "previous": result.previous})
            await self.actuator.record_event(
                namespace=action.namespace,
                va=action.name,
                reason="ScaledUp" if (result.previous or 0) < action.replicas else "ScaledDown",
                message=f"wva scaled deployment {action.deployment} from {result.previous} to {action.replicas}",
            )
        if result.outcome in ("applied", "no_op"):
            return ScaleApplied(action.namespace, action.name, action.replicas, "no_op" if result.outcome == "no_op" else "applied")
        log.warning("did not scale %s/%s: %s %s", action.namespace, action.deployment, result.outcome, result.detail, extra=fields)
        return ScaleFailed(action.namespace, action.name, action.replicas, result.outcome, result.detail)  # type: ignore[arg-type]

    async def run_publisher(self) -> None:
        while True:
            decision = await self.decisions.get()
            telemetry.DECISIONS.labels(reason=decision.reason).inc()
            self.gauges.decided(decision)
            log.info(
                "decision %s/%s %d -> %d %s",
                decision.namespace,
                decision.name,
                decision.current,
                decision.desired,
                decision.reason,
                extra={"namespace": decision.namespace, "va": decision.name, "reason": decision.reason,
                       "applied": decision.applied, "outcome": decision.outcome, "detail": decision.detail},
            )
            try:
                await self.runtime.publish(self.subjects.decisions(decision.namespace, decision.name), decision)
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("could not publish decision: %s", exc, extra={"namespace": decision.namespace, "va": decision.name})

    async def run_status_writer(self) -> None:
        while True:
            await self.status_ready.wait()
            self.status_ready.clear()
            failed = False
            for key in list(self.statuses):
                action = self.statuses.pop(key, None)
                if action is None:
                    continue
                fence = self.fence(action.namespace, action.model_id)
                if await self.actuator.write_status(key[0], key[1], action.status, fence=fence) is False:
                    self.statuses.setdefault(key, action)  # unless a newer one arrived meanwhile
                    failed = True
            if failed:
                await asyncio.sleep(_STATUS_RETRY)
                self.status_ready.set()

    async def nudge(self, action: FetchAction) -> None:
        """Ask the fetcher to publish a fresh snapshot; it arrives on the metrics stream like every one."""
        request = messages.FetchRequest(namespace=action.namespace, name=action.name, at=messages.utcnow(), fresh=True)
        try:
            await self.runtime.nc.request(
                self.subjects.fetch(action.namespace, action.name),
                messages.encode(request),
                timeout=self.settings.fetch_request_timeout,
            )
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            telemetry.FETCH_REQUESTS.labels(outcome="no_reply").inc()
            log.info("no fetcher answered for %s/%s (%s)", action.namespace, action.name, type(exc).__name__)
            return
        telemetry.FETCH_REQUESTS.labels(outcome="ok").inc()


async def main(runtime: Runtime) -> None:
    settings = cast(ScalerSettings, runtime.settings)
    namespaces: list[str | None] = list(settings.watch_namespaces) or [None]
    api = await kube.api_client(settings.kubeconfig, long_lived_connections=len(namespaces) + 1)
    api.user_agent = f"wva-scaler/{runtime.identity}"  # who wrote, in the API server's audit log
    authority = authority_mod.Authority()
    shell = Shell(runtime, settings, KubeActuator(api, budget_seconds=settings.actuation_budget), authority)
    actuating = settings.scaler_mode == "scale"
    runtime.health.set("config", False)
    if actuating:  # in hpa and dry-run modes nothing is patched, so no authority is needed (nor its RBAC)
        runtime.health.set("authority", False)
    else:
        authority.synced.set()
    try:
        async with asyncio.TaskGroup() as tg:
            if settings.saturation_config:
                tg.create_task(configsource.poll_file(Path(settings.saturation_config), shell.on_config))
            else:
                tg.create_task(
                    configsource.watch_configmap(api, settings.config_namespace, settings.config_map_name, shell.on_config)
                )
            if actuating:
                for watch in authority_mod.watches(
                    api, authority, namespaces=namespaces, label_selector=va_label_selector(settings.controller_instance)
                ):
                    tg.create_task(watch.run(), name=f"scaler-authority-{watch.namespace or 'all'}")
            tg.create_task(shell.run_core())
            tg.create_task(shell.run_actuator())
            tg.create_task(shell.run_publisher())
            tg.create_task(shell.run_status_writer())
            await shell.configured.wait()
            await authority.synced.wait()
            if actuating:
                runtime.health.set("authority", True)
            events_start = await shell.started()
            tg.create_task(shell.follow(SubjectKind.TARGETS, messages.targets_decoder, "last_per_subject", "targets"))
            tg.create_task(shell.follow(SubjectKind.METRICS, messages.metrics_decoder, "last_per_subject", "metrics"))
            tg.create_task(shell.follow_events(events_start))
            tg.create_task(shell.tick())
            if runtime.leases is not None:  # its Ownership messages come after events_start: none is missed
                tg.create_task(runtime.run_leases(), name="scaler-leases")
    finally:
        for task in list(shell.nudges):
            task.cancel()
        await api.close()


