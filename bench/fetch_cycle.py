"""Benchmark 1: one background fetch cycle against a real Prometheus, batched vs per-VA queries.

A real Prometheus scrapes emulated vLLM pods (``bench.pods``: the sandbox's ``/metrics`` text, 116
series per pod) for 10 / 100 / 1,000 VAs of 1-4 pods each, every size in its own namespaces, all in
one Prometheus. For each size three fetchers (``services.fetcher.fetching.Fetcher`` with the real
``PrometheusCollector``, the real ``MemoryCache`` and ``Tracker``, publishing to a real nats-server)
run ``cycle()`` in turn (ABC CBA order, an idle window before each), so every mode shares the
machine's noise and none pays for the one before it: batched (the
default: uncompressed answers), batched with ``WVA_PROMETHEUS_COMPRESSION=true`` (gzip), per-VA. Per
cycle:

- queries sent (the collector's own count, retries included),
- wall time (the cycle's own ``duration_ms``: query, split per VA, cache, publish),
- Prometheus CPU, from its ``process_cpu_seconds_total`` read before and after, minus its scraping
  CPU measured in the idle window right before (rate x cycle time),
- bytes of JSON Prometheus returned (a response hook on the collector's HTTP session).

Small sizes run several cycles per measurement, so Prometheus's 10 ms CPU resolution does not hide them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import pods, servers, workload
from bench.report import Stat, Table, fmt, stat
from services.fetcher import cache as caching
from services.fetcher import factory
from services.fetcher.fetching import Fetcher
from services.fetcher.settings import FetcherSettings
from services.fetcher.tracking import Tracker
from shared import messages, natsio, publishing, streams
from shared.subjects import Subjects

MODES = ("batched", "batched-gzip", "per-va")
_PER_VA_BUDGET = 300.0  # seconds


@dataclass
class Installation:
    """Prometheus scraping the emulated pods of every size, plus a nats-server."""

    prometheus: servers.PrometheusServer
    nats_url: str
    sizes: dict[int, list[workload.VA]]
    scrape_interval: float
    extras: dict[str, Any] = field(default_factory=dict)


def vas_for(n: int) -> list[workload.VA]:
    return workload.vas(n, prefix="fetch")


@contextlib.asynccontextmanager
async def installation(
    sizes: list[int], *, scrape_interval: float, announce: Any = print
) -> AsyncIterator[Installation]:
    by_size = {n: vas_for(n) for n in sizes}
    pod_list = [
        (va.namespace, p, va.model_id) for vs in by_size.values() for va in vs for p in workload.pod_names(va)
    ]
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wva-bench-pods-")))
        emulated = pods.PodsProcess(pod_list, tmp)
        stack.callback(emulated.stop)
        port = await asyncio.to_thread(emulated.start)
        nats = stack.enter_context(servers.nats())
        prom = stack.enter_context(servers.prometheus(f"{scrape_interval:g}s"))
        prom.write_targets(pods.sd_document(port, pod_list))
        announce(
            f"  waiting for Prometheus to scrape {len(pod_list):,} emulated pods every {scrape_interval:g}s …"
        )
        await _wait_series(prom, len(pod_list), timeout=60 + 8 * scrape_interval + len(pod_list) / 50)
        yield Installation(prom, nats.url, by_size, scrape_interval)


async def _wait_series(prom: servers.PrometheusServer, count: int, *, timeout: float) -> None:
    """Until every pod has two samples of a counter in the rate window (rate() is defined)."""
    deadline = time.monotonic() + timeout
    last = 0
    while time.monotonic() < deadline:
        result = await prom.query('count(rate(vllm:request_success_total{namespace=~"fetch-.*"}[60s]))')
        last = int(float(result[0]["value"][1])) if result else 0
        if last >= count:
            return
        await asyncio.sleep(1.0)
    raise RuntimeError(f"Prometheus has rate() for {last} of {count} pods after {timeout:.0f}s")


class _Bytes:
    def __init__(self) -> None:
        self.total = 0

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        self.total += len(response.content)
        return response


async def _publisher(nats_url: str) -> tuple[Any, Any]:
    from services.fetcher.settings import FetcherSettings as S

    nc = await natsio.connect(S(nats_url=nats_url), name="bench-fetch")
    js = nc.jetstream()
    subjects = Subjects()
    await streams.ensure(js, subjects, streams.StreamSpec())

    async def publish(snapshots: Sequence[messages.MetricsSnapshot]) -> list[Exception | None]:
        batch = [publishing.Outgoing(subjects.metrics(s.namespace, s.name), s) for s in snapshots]
        return [r if isinstance(r, Exception) else None for r in await publishing.publish_many(nc, batch)]

    return nc, publish


def _fetcher(
    inst: Installation, mode: str, targets: list[messages.Target], publish: Any
) -> tuple[Fetcher, _Bytes]:
    settings = FetcherSettings(
        prometheus_url=inst.prometheus.url,
        query_mode="per-va" if mode == "per-va" else "batched",
        prometheus_compression=mode == "batched-gzip",
        nats_url=inst.nats_url,
        # Per-VA mode takes ~25 s at 1,000 VAs: within the default 10 s budget it would give up with
        # most VAs unavailable, and Prometheus would still be answering the abandoned queries while
        # the next mode is measured. Every mode collects every VA here.
        fetch_budget=_PER_VA_BUDGET if mode == "per-va" else FetcherSettings.fetch_budget,
    )
    collector = factory.create(settings)
    counter = _Bytes()
    session = getattr(collector, "_session", None)  # the collector's requests.Session (bench-only peek)
    if session is not None:
        session.hooks["response"].append(counter.hook)
    fetcher = Fetcher(
        collector=collector, cache=caching.MemoryCache(settings.cache_ttl), tracker=Tracker(), publish=publish
    )
    for t in targets:
        fetcher.track(t)
    return fetcher, counter


async def run(inst: Installation, *, reps: int) -> list[Table]:
    nc, publish = await _publisher(inst.nats_url)
    table = Table(
        "fetch_cycle",
        "1. Fetch cycle against a real Prometheus: batched vs per-VA queries",
        [
            "VAs",
            "pods",
            "mode",
            "queries/cycle",
            "cycle ms",
            "Prometheus CPU ms/cycle",
            "KiB returned/cycle",
            "snapshots ok",
            "÷ batched (time, CPU)",
        ],
    )
    try:
        for n, vas in inst.sizes.items():
            await _one_size(inst, n, vas, publish, reps, table)
    finally:
        await nc.drain()
    table.notes += [
        f"Scrape interval {inst.scrape_interval:g}s, rate window 60s, {reps} measurements per mode (ABC CBA order), "
        "Prometheus concurrency 4 (the default). CPU is net of the scraping CPU measured in an idle window before each mode's cycles; "
        "small negative values mean below the noise.",
        "Bytes: the JSON bodies as decoded (batched-gzip sends about a tenth of them over the wire).",
        f"Per-VA mode runs with WVA_FETCH_BUDGET={_PER_VA_BUDGET:g}s (the default 10s cuts it short at 1,000 VAs).",
    ]
    return [table]


async def _one_size(
    inst: Installation, n: int, vas: list[workload.VA], publish: Any, reps: int, table: Table
) -> None:
    targets = [workload.target(va) for va in vas]
    pods_total = sum(va.pods for va in vas)
    k = max(1, math.ceil(20 / n))  # cycles per measurement
    fetchers = {mode: _fetcher(inst, mode, targets, publish) for mode in MODES}
    wall: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    queries: dict[str, list[float]] = {m: [] for m in MODES}
    kib: dict[str, list[float]] = {m: [] for m in MODES}
    ok: dict[str, list[float]] = {m: [] for m in MODES}
    pair_wall: dict[str, list[float]] = {m: [] for m in MODES}  # each mode over batched, per repetition
    pair_cpu: dict[str, list[float]] = {m: [] for m in MODES}
    try:
        for mode in MODES:  # warm-up: connections, Prometheus caches
            await fetchers[mode][0].cycle()
        for rep in range(reps):
            order = MODES if rep % 2 == 0 else MODES[::-1]
            got: dict[str, tuple[float, float]] = {}
            for mode in order:
                # An idle window before every mode: Prometheus's scraping CPU is measured right before
                # the mode's cycles, and the mode before it (per-VA's thousands of queries) has settled
                # instead of slowing the first cycles of this one.
                idle_rate = await _idle_cpu_rate(inst.prometheus, seconds=max(2.0, inst.scrape_interval))
                fetcher, counter = fetchers[mode]
                b0, c0, t0 = (
                    counter.total,
                    servers.prometheus_cpu_seconds(inst.prometheus),
                    time.perf_counter(),
                )
                durations: list[float] = []
                for _ in range(k):
                    report = await fetcher.cycle()
                    durations.append(report.duration_ms)
                    queries[mode].append(report.queries)
                    ok[mode].append(report.ok / n)
                elapsed = time.perf_counter() - t0
                c1 = servers.prometheus_cpu_seconds(inst.prometheus)
                net = ((c1 - c0) - idle_rate * elapsed) / k * 1000.0
                w = sorted(durations)[len(durations) // 2]
                wall[mode].append(w)
                cpu[mode].append(net)
                kib[mode].append((counter.total - b0) / k / 1024)
                got[mode] = (w, net)
            for mode in MODES[1:]:
                pair_wall[mode].append(got[mode][0] / got["batched"][0])
                if got["batched"][1] > 0:
                    pair_cpu[mode].append(got[mode][1] / got["batched"][1])
    finally:
        for fetcher, _ in fetchers.values():
            await fetcher.aclose()
    for mode in MODES:
        ratios = f"{stat(pair_wall[mode]).fmt(2)}x, {stat(pair_cpu[mode]).fmt(2)}x" if pair_wall[mode] else ""
        q = stat(queries[mode])
        table.add(
            [
                n,
                pods_total,
                mode,
                fmt(q.median),
                stat(wall[mode]),
                stat(cpu[mode]),
                stat(kib[mode]),
                f"{stat(ok[mode]).median:.0%}",
                ratios,
            ],
            vas=n,
            pods=pods_total,
            mode=mode,
            queries_per_cycle=q,
            cycle_ms=stat(wall[mode]),
            prometheus_cpu_ms_per_cycle=stat(cpu[mode]),
            kib_per_cycle=stat(kib[mode]),
            ok_share=stat(ok[mode]),
            **(
                {"over_batched_time": stat(pair_wall[mode]), "over_batched_cpu": stat(pair_cpu[mode])}
                if pair_wall[mode]
                else {}
            ),
        )


async def _idle_cpu_rate(prom: servers.PrometheusServer, *, seconds: float) -> float:
    c0, t0 = servers.prometheus_cpu_seconds(prom), time.perf_counter()
    await asyncio.sleep(seconds)
    return (servers.prometheus_cpu_seconds(prom) - c0) / (time.perf_counter() - t0)


def summary(stats: dict[str, Stat]) -> str:  # pragma: no cover - helper for docs
    return ", ".join(f"{k} {v.fmt()}" for k, v in stats.items())
