"""Benchmark 5: memory per tracked VA, scaler core state and fetcher cache + tracking.

Each measurement runs in a fresh interpreter (``python -m bench.memory --child …``): import everything,
build the empty component, measure; then feed it ``n`` VAs the way the service would (messages decoded
from their wire bytes, so strings are the decoder's own), ``gc.collect()``, measure again. The figure
is the difference divided by ``n``. RSS (``VmRSS`` from ``/proc/self/status``) and tracemalloc are
measured in separate children, because tracing inflates RSS.

- scaler: ``Scaler.handle`` of one ``Target`` and one ``MetricsSnapshot`` per VA (1-4 pods).
- fetcher: ``Fetcher.track`` per VA, then one background ``cycle()`` through a stub collector that
  returns a snapshot per VA, so the real code fills the ``MemoryCache`` (``allocation:`` entries and
  ``replica:`` entries per model) and the ``Tracker``. The stub's snapshots are decoded from their wire
  bytes, each with its own strings and times.
- fetcher, collector-made snapshots: the same, but the stub makes each snapshot as the Prometheus and
  scrape collectors do (``collector.assemble`` from per-pod samples), so a snapshot shares its
  namespace, names and model ID with the tracked Target and one time with the cycle's other snapshots:
  what a running fetcher holds.
- scaler /metrics gauges: the scaler shell's WVA-compatible gauges (``telemetry.Gauges.decided`` of one
  decision per VA; the decisions themselves are made before the first measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.report import Table, stat

ROOT = Path(__file__).resolve().parent.parent
LABELS = {
    "scaler": "scaler core state",
    "fetcher": "fetcher cache + tracking",
    "fetcher-assembled": "fetcher, collector-made snapshots",
    "scaler-gauges": "scaler /metrics gauges",
}


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _child(component: str, n: int, trace: bool) -> dict[str, float]:
    from bench import workload
    from shared import messages

    vas = workload.vas(n)
    rng = random.Random(7)
    t = time.time()

    def wire_target(va: workload.VA) -> messages.Target:
        msg = messages.targets_decoder.decode(messages.encode(workload.target(va)))
        assert isinstance(msg, messages.Target)
        return msg

    def wire_snapshot(va: workload.VA) -> messages.MetricsSnapshot:
        snap = workload.snapshot(va, collected_at=t, kv=workload.calm_kv(rng, va.pods))
        msg = messages.metrics_decoder.decode(messages.encode(snap))
        assert isinstance(msg, messages.MetricsSnapshot)
        return msg

    if component == "scaler":
        from services.scaler.core import Scaler

        core = Scaler()

        def fill() -> object:
            for va in vas:
                core.handle(wire_target(va), t)
                core.handle(wire_snapshot(va), t)
            return core

    elif component == "scaler-gauges":
        from services.scaler import telemetry

        gauges = telemetry.Gauges()
        decisions = [
            messages.Decision(
                namespace=va.namespace, name=va.name, at=messages.utcnow(), model_id=va.model_id,
                accelerator="A100", current=va.pods, desired=va.pods, reason="hold_stabilizing",
            )
            for va in vas
        ]

        def fill() -> object:
            for decision in decisions:
                gauges.decided(decision)
            return gauges

    else:
        from services.fetcher import cache as caching
        from services.fetcher.collector import Collection, PodKey, PodSample, assemble, pod_key
        from services.fetcher.fetching import Fetcher
        from services.fetcher.tracking import Tracker
        from shared.messages import va_key

        def samples(tg: messages.Target) -> dict[PodKey, PodSample]:
            """What the collectors read per pod for the traffic ``wire_snapshot`` describes (5 requests/s of
            512 prompt and 128 output tokens, TTFT 80 ms, ITL 20 ms)."""
            rate = 5.0 / max(1, len(tg.pods))
            kv = workload.calm_kv(rng, len(tg.pods))
            return {
                pod_key(tg.namespace, p.name): PodSample(
                    kv_cache_usage=k, waiting=0.0, running=8.0, num_gpu_blocks=1024, block_size=16,
                    request_rate=rate, request_prompt_tokens_rate=512 * rate,
                    request_generation_tokens_rate=128 * rate, generation_tokens_rate=128 * rate,
                    ttft_sum_rate=0.08 * rate, ttft_count_rate=rate, itl_sum_rate=0.02 * 128 * rate,
                    itl_count_rate=128 * rate,
                )
                for p, k in zip(tg.pods, kv, strict=True)
            }

        class StubCollector:
            name = "stub"
            queries = 0

            async def collect(self, targets: Sequence[messages.Target]) -> Collection:
                if component == "fetcher-assembled":
                    at = datetime.fromtimestamp(t, UTC)
                    return Collection(
                        snapshots={
                            va_key(tg.namespace, tg.name): assemble(tg, samples(tg), collected_at=at)[0]
                            for tg in targets
                        },
                        queries=0,
                    )
                by_name = {(v.namespace, v.name): v for v in vas}
                snaps = {
                    va_key(tg.namespace, tg.name): wire_snapshot(by_name[(tg.namespace, tg.name)])
                    for tg in targets
                }
                return Collection(snapshots=snaps, queries=0)

            async def aclose(self) -> None:
                return None

        async def publish(snapshots: Sequence[messages.MetricsSnapshot]) -> list[Exception | None]:
            return [None] * len(snapshots)

        fetcher = Fetcher(
            collector=StubCollector(),  # type: ignore[arg-type]  # only collect() is used
            cache=caching.MemoryCache(3600.0),
            tracker=Tracker(),
            publish=publish,
        )

        def fill() -> object:
            for va in vas:
                fetcher.track(wire_target(va))

            async def once() -> None:
                await fetcher.cycle()

            asyncio.run(once())
            assert len(fetcher.tracker) == n and len(fetcher.cache) >= n
            return fetcher

    asyncio.run(asyncio.sleep(0))  # the event loop's own first-use allocations are not per-VA state
    gc.collect()
    if trace:
        tracemalloc.start()
        base_traced = tracemalloc.get_traced_memory()[0]
    base_rss = _rss_kb()
    keep = fill()  # the generator's own list ``vas`` is alive before and after: not counted
    gc.collect()
    after_rss = _rss_kb()
    traced = (tracemalloc.get_traced_memory()[0] - base_traced) if trace else 0
    del keep
    return {"rss_empty_kb": base_rss, "rss_delta_kb": after_rss - base_rss, "traced_bytes": traced}


def _measure(component: str, n: int, trace: bool) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.memory",
            "--child",
            component,
            "--vas",
            str(n),
            *(["--trace"] if trace else []),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(sizes: list[int], *, reps: int) -> list[Table]:
    table = Table(
        "memory",
        "5. Memory per tracked VA (difference over the empty component, fresh interpreter each)",
        ["component", "VAs", "RSS KiB/VA", "tracemalloc KiB/VA", "empty process RSS MiB"],
    )
    for component in LABELS:
        for n in sizes:
            rss: list[float] = []
            traced: list[float] = []
            empty: list[float] = []
            for _ in range(reps):
                r = _measure(component, n, False)
                rss.append(r["rss_delta_kb"] / n)
                empty.append(r["rss_empty_kb"] / 1024)
                traced.append(_measure(component, n, True)["traced_bytes"] / 1024 / n)
            s_rss, s_tr, s_empty = stat(rss), stat(traced), stat(empty)
            label = LABELS[component]
            table.add(
                [label, n, s_rss, s_tr, s_empty],
                component=component,
                vas=n,
                rss_kib_per_va=s_rss,
                traced_kib_per_va=s_tr,
                empty_rss_mib=s_empty,
            )
    table.notes += [
        f"{reps} fresh interpreters per cell (RSS and tracemalloc in separate ones). VAs in groups of 1-4, "
        "1-4 pods each (2.5 on average); the fetcher's figure includes the cached snapshot and the per-model replica entry.",
        "fetcher + tracking decodes each snapshot from its wire bytes (its own strings and times); collector-made "
        "snapshots share them with the tracked Target, as in a running fetcher, and carry per-pod token rates and ITL.",
        "tracemalloc counts Python allocations only; RSS also includes allocator slack, so it is the one to plan with.",
    ]
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=tuple(LABELS), required=True)
    parser.add_argument("--vas", type=int, required=True)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    print(json.dumps(_child(args.child, args.vas, args.trace)))


if __name__ == "__main__":
    main()
