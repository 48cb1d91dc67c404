"""Benchmark 2: event-to-actuation latency through the scaler shell, and the invalidation path.

2a. Scaler: the real scaler service (``lifecycle.serve`` + ``services.scaler.service.main``, in this
process) against a real nats-server and the emulated Kubernetes API over HTTP, with ``n`` tracked VAs
(single-variant models, warm: every VA has a target and a calm snapshot). One event = publish a
snapshot that requires a scale-up for one VA; latency = from just before the JetStream publish to the
moment the scale patch is committed in the emulated API (its store listener, same clock). The floor
in the same run, per event: when a plain NATS subscriber in this process receives that snapshot.
Between events the benchmark puts the Deployment back (as an operator would), publishes the target
the watcher would, and waits for the scaler's decision to settle.

2b. Invalidation: the real fetcher service (Prometheus backend, background cycle off) tracking ``n``
VAs scraped by a real Prometheus; one event = an ``Invalidation`` published for one VA; latency = until
the fresh snapshot of that VA (``collected_at`` after the invalidation) is received on
``wva.metrics``. The watcher's share (template change → Invalidation) is in 2c (``bench.template_change``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from bench import servers, workload
from bench.report import Table, percentile, stat
from services.fetcher import service as fetcher_service
from services.fetcher.settings import FetcherSettings
from services.sandbox.kubeapi import Change, KubeApiEmulator
from services.sandbox.kubeapi import resources as kres
from services.scaler import reasons
from services.scaler import service as scaler_service
from services.scaler.settings import ScalerSettings
from shared import kube, lifecycle, messages, natsio, streams
from shared.subjects import SubjectKind, Subjects

log = logging.getLogger("bench.latency")


def _deployment(va: workload.VA) -> dict[str, Any]:
    labels = {"app": va.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": va.name, "namespace": va.namespace},
        "spec": {
            "replicas": va.pods,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:emulated"}]},
            },
        },
    }


def _va(va: workload.VA) -> dict[str, Any]:
    return {
        "apiVersion": kube.API_VERSION,
        "kind": kube.KIND,
        "metadata": {"name": va.name, "namespace": va.namespace, "labels": {kube.ACCELERATOR_LABEL: "A100"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": va.name},
            "modelID": va.model_id,
            "variantCost": str(va.cost),
            "minReplicas": 1,
            "maxReplicas": 1000,
        },
    }


@contextlib.asynccontextmanager
async def _serving(name: str, settings: Any, main: Any) -> AsyncIterator[None]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(lifecycle.serve(name, settings, main, stop=stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _quiet(counter: list[int], *, at_least: int, quiet: float, timeout: float) -> None:
    """Until ``counter[0] >= at_least`` and it has not moved for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if counter[0] != last:
            last, since = counter[0], time.monotonic()
        elif counter[0] >= at_least and time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the scaler did not settle: {counter[0]} of {at_least} status writes")


async def scaler_latency(n: int, *, events: int) -> dict[str, Any]:
    vas = workload.vas(n, prefix="lat", group_sizes=(1,))
    subjects = Subjects(f"wvalat{n}")
    with servers.nats() as nats, tempfile.TemporaryDirectory(prefix="wva-bench-kube-") as tmp:
        async with KubeApiEmulator(startup_delay=0.05, bookmark_interval=1.0) as api:
            kubeconfig = api.write_kubeconfig(Path(tmp) / "kubeconfig")
            generation: dict[str, int] = {}
            for va in vas:
                generation[va.name] = int(
                    api.store.create(kres.DEPLOYMENTS, _deployment(va), namespace=va.namespace)["metadata"][
                        "generation"
                    ]
                )
                api.store.create(kres.VARIANT_AUTOSCALINGS, _va(va), namespace=va.namespace)
            armed: dict[str, asyncio.Future[float]] = {}
            status_writes = [0]

            def listener(change: Change) -> None:
                now = time.perf_counter()
                if change.resource == kres.VARIANT_AUTOSCALINGS and change.type == "MODIFIED":
                    status_writes[0] += 1
                if change.resource != kres.DEPLOYMENTS or change.type != "MODIFIED" or change.old is None:
                    return
                fut = armed.get(change.name)
                if (
                    fut is not None
                    and not fut.done()
                    and (change.object["spec"].get("replicas") != change.old["spec"].get("replicas"))
                ):
                    fut.set_result(now)

            remove = api.store.add_listener(listener)
            base: dict[str, Any] = dict(nats_url=nats.url, subject_prefix=subjects.prefix)
            nc = await natsio.connect(ScalerSettings(**base), name="bench-latency")
            js = nc.jetstream()
            await streams.ensure(js, subjects, streams.StreamSpec())
            received: dict[str, float] = {}
            settled: dict[str, asyncio.Event] = {}

            async def on_metrics(msg: Msg) -> None:
                name = msg.subject.rsplit(".", 1)[-1]
                received.setdefault(name, time.perf_counter())

            async def on_decision(msg: Msg) -> None:
                d = messages.events_decoder.decode(msg.data)
                if isinstance(d, messages.Decision) and d.reason == reasons.HOLD_NO_TRIGGER:
                    ev = settled.get(d.name)
                    if ev is not None:
                        ev.set()

            subs = [
                await nc.subscribe(subjects.wildcard(SubjectKind.METRICS), cb=on_metrics),
                await nc.subscribe(subjects.wildcard(SubjectKind.DECISIONS), cb=on_decision),
            ]
            rng = random.Random(n)
            now = time.time()
            for va in vas:
                await natsio.publish(js, subjects.targets(va.namespace, va.name), workload.target(va))
                await natsio.publish(
                    js,
                    subjects.metrics(va.namespace, va.name),
                    workload.snapshot(va, collected_at=now, kv=workload.calm_kv(rng, va.pods)),
                )
            settings = ScalerSettings(
                **base,
                http_addr="127.0.0.1:0",
                kubeconfig=str(kubeconfig),
                reconcile_interval=3600.0,
                stale_after=3600.0,
                scale_down_stabilization=3600.0,
                config_namespace="wva-system",
            )
            latencies: list[float] = []
            floors: list[float] = []
            timeouts = unsettled = 0
            try:
                async with _serving("scaler", settings, scaler_service.main):
                    await _quiet(status_writes, at_least=n, quiet=1.0, timeout=60 + n * 0.1)
                    for i in range(events):
                        va = vas[i % n]
                        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                        armed[va.name] = fut
                        received.pop(va.name, None)
                        hot = workload.snapshot(
                            va,
                            collected_at=time.time(),
                            kv=workload.hot_kv(va.pods),
                            generation=generation[va.name],
                        )
                        t0 = time.perf_counter()
                        await natsio.publish(js, subjects.metrics(va.namespace, va.name), hot)
                        try:
                            t1 = await asyncio.wait_for(fut, 10.0)
                            latencies.append(t1 - t0)
                            if va.name in received:
                                floors.append(received[va.name] - t0)
                        except TimeoutError:
                            timeouts += 1
                        armed.pop(va.name, None)
                        # Put the Deployment back and tell the scaler, as an operator and the watcher would.
                        settled[va.name] = asyncio.Event()
                        obj = api.store.patch(
                            kres.DEPLOYMENTS, va.namespace, va.name, {"spec": {"replicas": va.pods}}
                        )
                        generation[va.name] = int(obj["metadata"]["generation"])
                        await natsio.publish(
                            js,
                            subjects.targets(va.namespace, va.name),
                            workload.target(va, generation=generation[va.name]),
                        )
                        await natsio.publish(
                            js,
                            subjects.metrics(va.namespace, va.name),
                            workload.snapshot(
                                va,
                                collected_at=time.time(),
                                kv=workload.calm_kv(rng, va.pods),
                                generation=generation[va.name],
                            ),
                        )
                        try:
                            await asyncio.wait_for(settled[va.name].wait(), 10.0)
                        except TimeoutError:
                            unsettled += 1
            finally:
                remove()
                for sub in subs:
                    await sub.unsubscribe()
                await nc.close()
    return {"latencies": latencies, "floors": floors, "timeouts": timeouts, "unsettled": unsettled}


async def invalidation_latency(inst: Any, n: int, vas: list[workload.VA], *, events: int) -> dict[str, Any]:
    subjects = Subjects(f"wvainv{n}")
    base: dict[str, Any] = dict(nats_url=inst.nats_url, subject_prefix=subjects.prefix)
    nc = await natsio.connect(FetcherSettings(**base), name="bench-invalidation")
    js = nc.jetstream()
    await streams.ensure(js, subjects, streams.StreamSpec())
    for va in vas:
        await natsio.publish(js, subjects.targets(va.namespace, va.name), workload.target(va))
    waiting: dict[str, tuple[float, asyncio.Future[float]]] = {}
    floor_at: dict[str, float] = {}

    async def on_metrics(msg: Msg) -> None:
        now = time.perf_counter()
        name = msg.subject.rsplit(".", 1)[-1]
        entry = waiting.get(name)
        if entry is None or entry[1].done():
            return
        snap = messages.metrics_decoder.decode(msg.data)
        if isinstance(snap, messages.MetricsSnapshot) and snap.collected_at.timestamp() >= entry[0]:
            entry[1].set_result(now)

    async def on_invalidation(msg: Msg) -> None:
        floor_at.setdefault(msg.subject.rsplit(".", 1)[-1], time.perf_counter())

    subs = [
        await nc.subscribe(subjects.wildcard(SubjectKind.METRICS), cb=on_metrics),
        await nc.subscribe(subjects.wildcard(SubjectKind.INVALIDATE), cb=on_invalidation),
    ]
    settings = FetcherSettings(
        **base, http_addr="127.0.0.1:0", prometheus_url=inst.prometheus.url, fetch_interval=0.0
    )
    latencies: list[float] = []
    floors: list[float] = []
    timeouts = 0
    rng = random.Random(n)
    try:
        async with _serving("fetcher", settings, fetcher_service.main):
            await asyncio.sleep(1.0)  # let it replay the targets
            for _ in range(events):
                va = vas[rng.randrange(n)]
                fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                wall = time.time()
                waiting[va.name] = (wall - 0.001, fut)
                floor_at.pop(va.name, None)
                inv = messages.Invalidation(
                    namespace=va.namespace,
                    name=va.name,
                    at=messages.utcnow(),
                    reason="template_changed",
                    # The targets' own generation: one ahead of the fetcher's Target waits for that Target.
                    deployment_generation=1,
                )
                t0 = time.perf_counter()
                await natsio.publish(js, subjects.invalidate(va.namespace, va.name), inv)
                try:
                    latencies.append(await asyncio.wait_for(fut, 15.0) - t0)
                    if va.name in floor_at:
                        floors.append(floor_at[va.name] - t0)
                except TimeoutError:
                    timeouts += 1
                waiting.pop(va.name, None)
    finally:
        for sub in subs:
            await sub.unsubscribe()
        await nc.close()
    return {"latencies": latencies, "floors": floors, "timeouts": timeouts}


def _row(table: Table, n: int, r: dict[str, Any], events: int) -> None:
    lat = [x * 1000 for x in r["latencies"]]
    fl = [x * 1000 for x in r["floors"]]
    p50, p99, mx = percentile(lat, 50), percentile(lat, 99), max(lat) if lat else float("nan")
    f50 = percentile(fl, 50)
    table.add(
        [n, f"{len(lat)}/{events}", p50, p99, mx, f50, f"{p50 / f50:.1f}x" if f50 else "n/a"],
        vas=n,
        events=events,
        measured=len(lat),
        timeouts=r["timeouts"],
        p50_ms=p50,
        p99_ms=p99,
        max_ms=mx,
        nats_floor_p50_ms=f50,
        nats_floor=stat(fl),
        ratio_p50_to_floor=p50 / f50 if f50 else None,
        unsettled=r.get("unsettled", 0),
    )


COLUMNS = ["VAs", "events measured", "p50 ms", "p99 ms", "max ms", "NATS floor p50 ms", "p50 ÷ floor"]


async def run_scaler(sizes: list[int], *, events: int) -> list[Table]:
    table = Table(
        "latency_scaler",
        "2a. Event-to-actuation latency: snapshot published → scale patch in the API",
        list(COLUMNS),
    )
    for n in sizes:
        r = await scaler_latency(n, events=events)
        _row(table, n, r, events)
        if r["unsettled"]:
            table.notes.append(f"{n} VAs: {r['unsettled']} resets did not settle within 10 s.")
    table.notes += [
        "Scaler, emulated Kubernetes API and the benchmark share one process and event loop (as in the integration "
        "tests); the path includes JetStream delivery to the scaler's ordered consumer, decode, the core, the "
        "actuator's HTTP PATCH of deployments/scale and the API's commit.",
        "NATS floor: the same message reaching a plain subscriber in this process.",
    ]
    return [table]


async def run_invalidation(inst: Any, *, events: int) -> list[Table]:
    table = Table(
        "latency_invalidation",
        "2b. Invalidation → fresh snapshot published (fetcher, real Prometheus)",
        list(COLUMNS),
    )
    for n, vas in inst.sizes.items():
        _row(table, n, await invalidation_latency(inst, n, vas, events=events), events)
    table.notes += [
        "The fetcher drops the VA's cache entries, waits its 20 ms batching window, runs the 11 targeted queries "
        "of that VA and the gateway's (4 at a time) and publishes; NATS floor: the invalidation reaching a plain subscriber.",
        "Not included: the watcher's share (Deployment change → Invalidation); 2c measures the whole path.",
    ]
    return [table]
