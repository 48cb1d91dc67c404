"""Benchmark 2c: template change → fresh snapshot, through the real watcher and the real fetcher.

For ``n`` VAs (each a Deployment and a VariantAutoscaling in the emulated Kubernetes API, same
namespaces and names as benchmark 2b), the real watcher (``services.watcher.service.main``) and the
real fetcher (``services.fetcher.service.main``, Prometheus backend) run in this process under
``lifecycle.serve`` against a real nats-server, the emulator over HTTP (kubeconfig) and a real
Prometheus scraping emulated vLLM pods (``fetch_cycle.installation``, as in 2b).

One event = a patch of one Deployment's pod template (an annotation in ``spec.template.metadata``,
through the emulator's store). Latency = from just before the patch to the moment a plain core NATS
subscriber in this process receives a ``MetricsSnapshot`` of that VA on ``wva.metrics.<ns>.<va>``
whose ``collected_at`` is after the patch. Intermediate point: the ``Invalidation`` with reason
``template_changed`` received on ``wva.invalidate.>``. The fetcher's background interval is set far
longer than the run (and its one cycle at start-up is over before the first event), so every fresh
snapshot comes from the invalidation path. Events go one at a time, on random VAs, spaced by a random
pause after the previous rollout has settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from bench import fetch_cycle, workload
from bench.latency import _deployment, _serving, _va
from bench.report import Table, percentile, stat
from services.fetcher import service as fetcher_service
from services.fetcher.settings import FetcherSettings
from services.sandbox.kubeapi import KubeApiEmulator
from services.sandbox.kubeapi import resources as kres
from services.watcher import service as watcher_service
from services.watcher.settings import WatcherSettings
from shared import messages, natsio
from shared.subjects import SubjectKind, Subjects

FETCH_INTERVAL = 600.0  # longer than any run: no background cycle during the events
STARTUP_DELAY = 0.05  # emulated pods turn ready this long after they are created
WATCHER_DEBOUNCE = WatcherSettings.__dataclass_fields__["debounce"].default


@contextlib.asynccontextmanager
async def _client(url: str, prefix: str) -> AsyncIterator[Any]:
    nc = await natsio.connect(FetcherSettings(nats_url=url, subject_prefix=prefix), name="bench-template")
    try:
        yield nc
    finally:
        await nc.close()


async def _wait(check: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def template_latency(inst: fetch_cycle.Installation, n: int, *, events: int) -> dict[str, Any]:
    vas = inst.sizes[n]
    subjects = Subjects(f"wvatpl{n}")
    namespaces = tuple(sorted({va.namespace for va in vas}))
    # The last Target per VA, the template_changed invalidations and the snapshots, as received.
    targets: dict[str, messages.Target] = {}
    snapshots: Counter[str] = Counter()
    armed: dict[str, dict[str, Any]] = {}

    async def on_target(msg: Msg) -> None:
        t = messages.targets_decoder.decode(msg.data)
        if isinstance(t, messages.Target):
            targets[t.name] = t

    async def on_invalidation(msg: Msg) -> None:
        now = time.perf_counter()
        inv = messages.events_decoder.decode(msg.data)
        if not isinstance(inv, messages.Invalidation):
            return
        entry = armed.get(inv.name)
        if entry is not None and inv.reason == "template_changed" and "inv" not in entry:
            entry["inv"], entry["hash"] = now, inv.template_hash
        elif entry is not None:
            entry.setdefault("other", []).append(inv.reason)

    async def on_metrics(msg: Msg) -> None:
        now = time.perf_counter()
        snap = messages.metrics_decoder.decode(msg.data)
        if not isinstance(snap, messages.MetricsSnapshot):
            return
        snapshots[snap.name] += 1
        entry = armed.get(snap.name)
        if entry is None or entry["fut"].done() or snap.collected_at.timestamp() < entry["wall"]:
            return
        entry["snap"] = snap
        entry["fut"].set_result(now)

    with tempfile.TemporaryDirectory(prefix="wva-bench-kube-") as tmp:
        async with (
            KubeApiEmulator(startup_delay=STARTUP_DELAY, bookmark_interval=1.0) as api,
            _client(inst.nats_url, subjects.prefix) as nc,
        ):
            kubeconfig = api.write_kubeconfig(Path(tmp) / "kubeconfig")
            for va in vas:
                api.store.create(kres.DEPLOYMENTS, _deployment(va), namespace=va.namespace)
                api.store.create(kres.VARIANT_AUTOSCALINGS, _va(va), namespace=va.namespace)
            subs = [
                await nc.subscribe(subjects.wildcard(SubjectKind.TARGETS), cb=on_target),
                await nc.subscribe(subjects.wildcard(SubjectKind.INVALIDATE), cb=on_invalidation),
                await nc.subscribe(subjects.wildcard(SubjectKind.METRICS), cb=on_metrics),
            ]
            await nc.flush()
            base: dict[str, Any] = dict(nats_url=inst.nats_url, subject_prefix=subjects.prefix, http_addr="127.0.0.1:0")
            watcher = WatcherSettings(**base, kubeconfig=str(kubeconfig), watch_namespaces=namespaces)
            fetcher = FetcherSettings(
                **base,
                prometheus_url=inst.prometheus.url,
                fetch_interval=FETCH_INTERVAL,
                cache_ttl=FETCH_INTERVAL,
            )

            def settled(va: workload.VA) -> bool:
                t = targets.get(va.name)
                return (
                    t is not None
                    and len(t.pods) == va.pods
                    and all(p.ready for p in t.pods)
                    and t.ready_replicas == va.pods
                )

            latencies: list[float] = []
            legs_inv: list[float] = []
            legs_snap: list[float] = []
            statuses: Counter[str] = Counter()
            new_template = 0
            other_reasons: Counter[str] = Counter()
            timeouts = no_invalidation = 0
            rng = random.Random(n)
            try:
                async with _serving("watcher", watcher, watcher_service.main):
                    await _wait(
                        lambda: all(settled(va) for va in vas), timeout=30 + n * 0.2, what="every VA's pods ready"
                    )
                    async with _serving("fetcher", fetcher, fetcher_service.main):
                        # The fetcher's start-up cycle publishes one snapshot per VA; let it finish.
                        await _wait(lambda: len(snapshots) >= n, timeout=30 + n * 0.1, what="the start-up cycle")
                        await asyncio.sleep(0.5)
                        for i in range(events):
                            va = vas[rng.randrange(n)]
                            await _wait(lambda va=va: settled(va), timeout=10, what=f"{va.name} to settle")
                            fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                            wall = time.time()
                            entry: dict[str, Any] = {"fut": fut, "wall": wall}
                            armed[va.name] = entry
                            patch = {"spec": {"template": {"metadata": {"annotations": {"bench/revision": str(i)}}}}}
                            t0 = time.perf_counter()
                            api.store.patch(kres.DEPLOYMENTS, va.namespace, va.name, patch)
                            try:
                                t1 = await asyncio.wait_for(fut, 15.0)
                            except TimeoutError:
                                timeouts += 1
                            else:
                                latencies.append(t1 - t0)
                                snap: messages.MetricsSnapshot = entry["snap"]
                                statuses[snap.status] += 1
                                if "inv" in entry:
                                    legs_inv.append(entry["inv"] - t0)
                                    legs_snap.append(t1 - entry["inv"])
                                    new_template += snap.template_hash == entry["hash"]
                                else:
                                    no_invalidation += 1
                            await asyncio.sleep(0.1)  # a late duplicate invalidation would show here
                            other_reasons.update(entry.get("other", []))
                            armed.pop(va.name, None)
                            await asyncio.sleep(rng.uniform(0.2, 0.5))
            finally:
                for sub in subs:
                    await sub.unsubscribe()
    return {
        "latencies": latencies,
        "to_invalidation": legs_inv,
        "invalidation_to_snapshot": legs_snap,
        "timeouts": timeouts,
        "no_invalidation": no_invalidation,
        "statuses": dict(statuses),
        "new_template": new_template,
        "other_reasons": dict(other_reasons),
    }


COLUMNS = [
    "VAs",
    "events measured",
    "p50 ms",
    "p99 ms",
    "max ms",
    "change → invalidation p50 / p99 ms",
    "invalidation → snapshot p50 / p99 ms",
    "snapshot status",
]


def _ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


async def run(
    sizes: list[int], *, events: int, scrape_interval: float, announce: Any = print
) -> list[Table]:
    table = Table(
        "latency_template",
        "2c. Template change → fresh snapshot published (watcher + fetcher, real Prometheus)",
        list(COLUMNS),
    )
    async with fetch_cycle.installation(sizes, scrape_interval=scrape_interval, announce=announce) as inst:
        for n in sizes:
            r = await template_latency(inst, n, events=events)
            lat, a, b = _ms(r["latencies"]), _ms(r["to_invalidation"]), _ms(r["invalidation_to_snapshot"])
            p50, p99, mx = percentile(lat, 50), percentile(lat, 99), max(lat) if lat else float("nan")
            a50, a99, b50, b99 = percentile(a, 50), percentile(a, 99), percentile(b, 50), percentile(b, 99)
            status = ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items())) or "—"
            table.add(
                [n, f"{len(lat)}/{events}", p50, p99, mx, f"{a50:.3g} / {a99:.3g}", f"{b50:.3g} / {b99:.3g}", status],
                vas=n,
                events=events,
                measured=len(lat),
                timeouts=r["timeouts"],
                p50_ms=p50,
                p99_ms=p99,
                max_ms=mx,
                latency_ms=stat(lat),
                to_invalidation_p50_ms=a50,
                to_invalidation_p99_ms=a99,
                to_invalidation_max_ms=max(a) if a else None,
                invalidation_to_snapshot_p50_ms=b50,
                invalidation_to_snapshot_p99_ms=b99,
                invalidation_to_snapshot_max_ms=max(b) if b else None,
                without_invalidation=r["no_invalidation"],
                snapshot_status=r["statuses"],
                snapshot_of_new_template=r["new_template"],
                other_invalidations=r["other_reasons"],
                fetch_interval_s=FETCH_INTERVAL,
                watcher_debounce_s=WATCHER_DEBOUNCE,
            )
            if r["timeouts"] or r["no_invalidation"]:
                table.notes.append(
                    f"{n} VAs: {r['timeouts']} events without a fresh snapshot within 15 s, "
                    f"{r['no_invalidation']} without a template_changed invalidation seen."
                )
            if r["other_reasons"]:
                table.notes.append(f"{n} VAs: other invalidations during the events: {r['other_reasons']}.")
            table.notes.append(
                f"{n} VAs: {r['new_template']} of {len(lat)} fresh snapshots carry the new template hash."
            )
    table.notes += [
        f"Background fetch interval {FETCH_INTERVAL:g} s (longer than the run; its start-up cycle ends before the "
        "first event), so every fresh snapshot comes from the invalidation path. Watcher debounce "
        f"{WATCHER_DEBOUNCE * 1000:g} ms (its default); emulated pods ready {STARTUP_DELAY * 1000:g} ms after creation; "
        f"scrape interval {scrape_interval:g} s.",
        "One event = a patch of one Deployment's pod template (an annotation) in the emulated API, one at a time, "
        "on a random VA whose previous rollout has settled, 0.2-0.5 s apart. The path: the emulator's watch "
        "event over HTTP, the watcher's debounce, index and publish (target, then invalidation), JetStream delivery "
        "to the fetcher, its 20 ms batching window, the 11 targeted queries, the gateway's and the publish.",
        "The fresh snapshot describes the new pods (their template hash), which Prometheus has not scraped yet, as "
        "right after a real rollout: status partial, no saturation metrics for those pods; the queries are the "
        "same 11 as for any targeted fetch.",
        "Watcher, fetcher, emulated API and the benchmark share one process and event loop; NATS and Prometheus "
        "are separate processes.",
    ]
    return [table]
