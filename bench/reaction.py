"""Benchmark 3: reaction time end to end — a step in offered load to the first scale-up applied.

The whole path with real parts: an emulated vLLM pod (``EmulatedServer``, the sandbox's queueing model,
real ``/metrics``) scraped by a real Prometheus every ``scrape`` seconds; the real fetcher service
(Prometheus backend, batched, background cycle every ``fetch`` seconds); the real scaler service;
nats-server; the emulated Kubernetes API. The target is published by hand as the watcher would (the
watcher landed after this benchmark was written). Load: 1 request/s until the scaler holds on fresh data, then a step to
40 requests/s (about 4x what one replica serves).

Per run: *reaction* = step → scale patch committed in the API; *saturation* = step → the moment the
pod's own state crosses the scaler's trigger (spare KV below 0.1 or queue spare below 3, polled every
20 ms); *pipeline delay* = reaction - saturation, the part wva is responsible for, to compare with
``scrape + fetch`` intervals (the worst case of sampling delays) in the same row.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from bench import servers, workload
from bench.latency import _deployment, _serving, _va
from bench.report import Table, stat
from services.fetcher import service as fetcher_service
from services.fetcher.settings import FetcherSettings
from services.sandbox import queueing, vllm
from services.sandbox.kubeapi import Change, KubeApiEmulator
from services.sandbox.kubeapi import resources as kres
from services.scaler import reasons
from services.scaler import service as scaler_service
from services.scaler.settings import ScalerSettings
from shared import messages, natsio, streams
from shared.subjects import SubjectKind, Subjects

LOW_RATE = 1.0
HIGH_RATE = 40.0


async def _load(server: vllm.EmulatedServer, rate: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        server.submit(input_tokens=512, output_tokens=128)
        await asyncio.sleep(1.0 / rate[0])


async def one_run(*, scrape: float, fetch: float, phase: float) -> dict[str, float]:
    va = workload.VA("react", "va-react", "org/react-model", 10.0, 1)
    subjects = Subjects("wvareact")
    stack = contextlib.AsyncExitStack()
    async with stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wva-bench-react-")))
        nats = stack.enter_context(servers.nats())
        prom = stack.enter_context(servers.prometheus(f"{scrape:g}s"))
        api = await stack.enter_async_context(KubeApiEmulator(startup_delay=0.05))
        kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")
        gen = int(
            api.store.create(kres.DEPLOYMENTS, _deployment(va), namespace=va.namespace)["metadata"][
                "generation"
            ]
        )
        api.store.create(kres.VARIANT_AUTOSCALINGS, _va(va), namespace=va.namespace)
        pod = vllm.EmulatedServer(model_id=va.model_id, params=queueing.ServerParams())
        port = await pod.start()
        stack.push_async_callback(pod.stop)
        pod_name = workload.pod_names(va)[0]
        prom.write_targets(
            [{"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": va.namespace, "pod": pod_name}}]
        )

        scaled: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        def listener(change: Change) -> None:
            if (
                change.resource == kres.DEPLOYMENTS
                and change.type == "MODIFIED"
                and change.old is not None
                and change.object["spec"].get("replicas", 0) > change.old["spec"].get("replicas", 0)
                and not scaled.done()
            ):
                scaled.set_result(time.perf_counter())

        stack.callback(api.store.add_listener(listener))
        base: dict[str, Any] = dict(nats_url=nats.url, subject_prefix=subjects.prefix)
        nc = await natsio.connect(ScalerSettings(**base), name="bench-reaction")
        stack.push_async_callback(nc.close)
        js = nc.jetstream()
        await streams.ensure(js, subjects, streams.StreamSpec())
        await natsio.publish(
            js,
            subjects.targets(va.namespace, va.name),
            workload.target(va, generation=gen, addresses={pod_name: f"127.0.0.1:{port}"}),
        )
        calm = asyncio.Event()

        async def on_decision(msg: Msg) -> None:
            d = messages.events_decoder.decode(msg.data)
            if isinstance(d, messages.Decision) and d.reason == reasons.HOLD_NO_TRIGGER:
                calm.set()

        await nc.subscribe(subjects.wildcard(SubjectKind.DECISIONS), cb=on_decision)
        rate = [LOW_RATE]
        stop_load = asyncio.Event()
        load = asyncio.create_task(_load(pod, rate, stop_load))
        try:
            await prom.wait_for(f'rate(vllm:request_success_total{{pod="{pod_name}"}}[60s])', timeout=60)
            fetcher_settings = FetcherSettings(
                **base,
                http_addr="127.0.0.1:0",
                prometheus_url=prom.url,
                fetch_interval=fetch,
                cache_ttl=max(30.0, fetch),
            )
            scaler_settings = ScalerSettings(
                **base,
                http_addr="127.0.0.1:0",
                kubeconfig=str(kubeconfig),
                fetch_interval=fetch,
                reconcile_interval=3600.0,
                scale_down_stabilization=3600.0,
                config_namespace="wva-system",
            )
            async with (
                _serving("fetcher", fetcher_settings, fetcher_service.main),
                _serving("scaler", scaler_settings, scaler_service.main),
            ):
                await asyncio.wait_for(calm.wait(), 60)
                # The calm decision follows a cycle closely: step at a random phase of the next cycle,
                # so runs sample the whole range between "just caught" and "just missed".
                await asyncio.sleep(fetch * phase)
                t_step = time.perf_counter()
                rate[0] = HIGH_RATE
                t_trigger = float("nan")
                deadline = t_step + 120
                while not scaled.done() and time.perf_counter() < deadline:
                    replica = pod.replica
                    replica.advance(pod.now())
                    if t_trigger != t_trigger and (  # NaN: not yet
                        replica.kv_cache_usage > 0.7 or replica.num_waiting > 2
                    ):
                        t_trigger = time.perf_counter()
                    await asyncio.sleep(0.02)
                t_scale = await asyncio.wait_for(scaled, 1.0)
        finally:
            stop_load.set()
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
    return {"reaction": t_scale - t_step, "saturation": t_trigger - t_step, "pipeline": t_scale - t_trigger}


async def run(
    *, reps: int, configs: tuple[tuple[float, float], ...] = ((1.0, 2.0), (1.0, 5.0))
) -> list[Table]:
    table = Table(
        "reaction",
        "3. Reaction time: load step → first scale-up applied",
        [
            "scrape s",
            "fetch s",
            "runs",
            "reaction s",
            "pod saturated after s",
            "pipeline delay s",
            "pipeline ÷ (scrape + fetch)",
        ],
    )
    for scrape, fetch in configs:
        rs: list[dict[str, float]] = []
        for i in range(reps):
            # Phases spread evenly over the cycle (same ones for every configuration).
            rs.append(await one_run(scrape=scrape, fetch=fetch, phase=(i + 0.5) / reps))
        reaction, sat, pipe = (stat([r[k] for r in rs]) for k in ("reaction", "saturation", "pipeline"))
        table.add(
            [scrape, fetch, len(rs), reaction, sat, pipe, f"{pipe.median / (scrape + fetch):.2f}"],
            scrape_s=scrape,
            fetch_s=fetch,
            runs=len(rs),
            reaction_s=reaction,
            saturation_s=sat,
            pipeline_s=pipe,
            pipeline_over_intervals=pipe.median / (scrape + fetch),
        )
    table.notes += [
        f"Load {LOW_RATE:g} → {HIGH_RATE:g} requests/s of 512 in / 128 out tokens on one replica (~10/s capacity); "
        "rate window 60 s; one fresh installation per run; the step falls at evenly spread phases of the fetch cycle.",
        "The pipeline delay is bounded by one scrape plus one fetch interval plus a cycle; a ratio below 1 means no "
        "extra waiting beyond the sampling intervals.",
    ]
    return [table]
