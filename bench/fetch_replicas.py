"""Benchmark 8: the fetch cycle and the load on Prometheus with 1, 2 and 3 fetcher replicas.

The installation of benchmark 1 (a real Prometheus scraping emulated vLLM pods, a real nats-server).
For R = 1, 2, 3: R fetchers (``services.fetcher.fetching.Fetcher`` with the real ``PrometheusCollector``,
batched queries) each take leases on the 16 partitions through real ``shared.leases.Leases`` in the
nats-server's KV bucket, as R replicas would, and collect only their partitions' VAs (the fetcher's
``owns``). Each measurement runs one cycle of every replica, one after the other (in production they
run at the same time on different pods), and reads Prometheus's CPU before and after. Per replica
and cycle: the VAs it collects, the queries it sends (the collector's count), its cycle time; per
fetch interval: Prometheus CPU for all the replicas' cycles together.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from bench import servers, workload
from bench.fetch_cycle import Installation, _fetcher, _idle_cpu_rate, _publisher
from bench.report import Table, stat
from shared import partitions
from shared.leases import Leases
from shared.natsleases import NatsLeaseStore

COUNTS = (1, 2, 3)
TTL = 3.0


async def _leases(nc: Any, replicas: int, bucket: str) -> list[Leases]:
    """Leases of ``replicas`` fetchers, played until they hold their fair shares and nothing moves."""
    held = [
        Leases(NatsLeaseStore(nc, bucket=bucket, ttl=TTL), service="fetcher", identity=f"fetcher-{i}", partitions=partitions.numbered(16), ttl=TTL)
        for i in range(replicas)
    ]
    share = partitions.fair_share(16, replicas)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for lease in held:
            await lease.round()
        counts = [len(lease.owned) for lease in held]
        if sum(counts) == 16 and max(counts) <= share and all(lease.members == replicas for lease in held):
            return held
        await asyncio.sleep(TTL / 3)
    raise RuntimeError(f"{replicas} fetchers did not share the partitions: {[len(x.owned) for x in held]}")


async def run(inst: Installation, *, n: int, reps: int, counts: tuple[int, ...] = COUNTS) -> list[Table]:
    table = Table(
        "fetch_replicas",
        f"8. Fetch cycle with 1, 2 and 3 fetcher replicas at {n:,} VAs (batched queries)",
        ["replicas", "VAs per replica", "queries/cycle per replica", "cycle ms per replica",
         "Prometheus CPU ms per interval (all replicas)", "KiB returned per replica cycle"],
    )  # fmt: skip
    targets = [workload.target(va) for va in inst.sizes[n]]
    nc, publish = await _publisher(inst.nats_url)
    try:
        for replicas in counts:
            await _one(inst, nc, publish, targets, replicas, reps, table)
    finally:
        await nc.drain()
    table.notes += [
        "Each replica collects only its partitions' VAs (a model group's partition: crc32 of namespace/model "
        "mod 16), but its batched queries name every namespace its VAs are in, which with 16 partitions is "
        "nearly every namespace: the query count per replica stays constant and each replica's queries "
        "return about as many series as one fetcher's, so Prometheus's work per fetch interval grows with "
        "the number of replicas while each replica's cycle (split per VA, cache, publish) shrinks.",
        "Cycles run one replica after the other, so cycle times are without contention between replicas.",
    ]
    return [table]


async def _one(
    inst: Installation, nc: Any, publish: Any, targets: list[Any], replicas: int, reps: int, table: Table
) -> None:
    held = await _leases(nc, replicas, bucket=f"BENCH_LEASES_{replicas}")
    renewing = [asyncio.create_task(lease.run()) for lease in held]
    fetchers = []
    try:
        for lease in held:
            fetcher, counter = _fetcher(inst, "batched", targets, publish)
            fetcher.owns = _owns(lease)
            fetchers.append((fetcher, counter))
        for fetcher, _ in fetchers:  # warm-up
            await fetcher.cycle()
        vas, queries, cycle, cpu, kib = [], [], [], [], []
        for _ in range(reps):
            idle = await _idle_cpu_rate(inst.prometheus, seconds=max(2.0, inst.scrape_interval))
            c0, t0 = servers.prometheus_cpu_seconds(inst.prometheus), time.perf_counter()
            for fetcher, counter in fetchers:
                b0 = counter.total
                report = await fetcher.cycle()
                vas.append(report.vas)
                queries.append(report.queries)
                cycle.append(report.duration_ms)
                kib.append((counter.total - b0) / 1024)
            elapsed = time.perf_counter() - t0
            cpu.append(((servers.prometheus_cpu_seconds(inst.prometheus) - c0) - idle * elapsed) * 1000.0)
    finally:
        for task in renewing:
            task.cancel()
        await asyncio.gather(*renewing, return_exceptions=True)
        for lease in held:
            with contextlib.suppress(Exception):
                await lease.release()
        for fetcher, _ in fetchers:
            await fetcher.aclose()
    q = stat(queries)
    table.add(
        [replicas, f"{min(vas)}..{max(vas)}", f"{q.median:g} [{q.lo:g}..{q.hi:g}]", stat(cycle), stat(cpu), stat(kib)],
        replicas=replicas, vas_per_replica_min=min(vas), vas_per_replica_max=max(vas),
        queries_per_cycle=stat(queries), cycle_ms=stat(cycle), prometheus_cpu_ms_per_interval=stat(cpu),
        kib_per_cycle=stat(kib),
    )  # fmt: skip


def _owns(lease: Leases) -> Any:
    def owns(target: Any) -> bool:
        return lease.valid(str(partitions.partition_of(target.namespace, target.model_id, 16)))

    return owns
