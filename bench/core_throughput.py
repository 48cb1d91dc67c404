"""Benchmark 4: snapshots per second through the scaler's pure core, at 10 / 1,000 / 10,000 VAs.

The core (``services.scaler.core.Scaler``) is fed a warm installation (every VA has a target and
a snapshot), then a stream of fresh snapshots in random VA order: 98 % calm loads (no trigger, the
common case) and 2 % saturated ones (a scale-up). Per repetition and size, three passes over the
same kind of stream, each with fresh timestamps: decode only (``metrics_decoder``, the shell's first
step), handle only (pre-decoded), and decode + handle (what the shell's core task does per message). A scale step is answered with ``ScaleApplied`` at
once, as a shell whose PATCH succeeds does.
Sizes are interleaved within each repetition so they share the machine's noise; the ratio to the
smallest size says whether the cost per snapshot grows with the number of VAs (it should not: a
snapshot re-evaluates its own group only).

A profile of the decode + handle pass at the largest size follows: share of time per function and
the allocation sites per snapshot (tracemalloc), to find avoidable work on the hot path.
"""

from __future__ import annotations

import cProfile
import gc
import pstats
import random
import time
from dataclasses import dataclass

from bench import workload
from bench.report import Table, fmt, ratio, stat
from services.scaler.actions import ScaleAction
from services.scaler.core import Scaler
from services.scaler.events import ScaleApplied
from shared import messages

HOT_SHARE = 0.02


@dataclass
class _Setup:
    n: int
    core: Scaler
    vas: list[workload.VA]
    clock: float  # the last collected_at used
    rng: random.Random


def _warm(n: int) -> _Setup:
    vas = workload.vas(n)
    core = Scaler()
    rng = random.Random(n)
    t = 1_700_000_000.0
    for va in vas:
        core.handle(workload.target(va), t)
    for va in vas:
        t += 0.001
        core.handle(workload.snapshot(va, collected_at=t, kv=workload.calm_kv(rng, va.pods)), t)
    return _Setup(n, core, vas, t, rng)


def _stream(s: _Setup, count: int) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(count):
        va = s.vas[s.rng.randrange(len(s.vas))]
        s.clock += 0.0005
        kv = workload.hot_kv(va.pods) if s.rng.random() < HOT_SHARE else workload.calm_kv(s.rng, va.pods)
        out.append(messages.encode(workload.snapshot(va, collected_at=s.clock, kv=kv)))
    return out


def _time_decode(data: list[bytes]) -> float:
    decode = messages.metrics_decoder.decode
    t0 = time.perf_counter()
    for b in data:
        decode(b)
    return time.perf_counter() - t0


def _handle(core: Scaler, event: messages.MetricsSnapshot, now: float) -> int:
    """One snapshot through the core, and the outcome of each step it asks for; how many actions."""
    actions = core.handle(event, now)
    count = len(actions)
    for a in actions:
        if isinstance(a, ScaleAction):
            count += len(core.handle(ScaleApplied(a.namespace, a.name, a.replicas), now))
    return count


def _time_handle(s: _Setup, events: list[messages.MetricsSnapshot]) -> tuple[float, int]:
    actions = 0
    t0 = time.perf_counter()
    for e in events:
        actions += _handle(s.core, e, e.collected_at.timestamp() + 0.05)
    return time.perf_counter() - t0, actions


def _time_both(s: _Setup, data: list[bytes]) -> float:
    decode = messages.metrics_decoder.decode
    now = s.clock + 0.05
    t0 = time.perf_counter()
    for b in data:
        _handle(s.core, decode(b), now)  # type: ignore[arg-type]
    return time.perf_counter() - t0


def run(sizes: list[int], *, events: int, reps: int) -> list[Table]:
    setups = [_warm(n) for n in sizes]
    decode_us: dict[int, list[float]] = {n: [] for n in sizes}
    handle_us: dict[int, list[float]] = {n: [] for n in sizes}
    both_rate: dict[int, list[float]] = {n: [] for n in sizes}
    actions_per: dict[int, list[float]] = {n: [] for n in sizes}
    encode_us: list[float] = []
    gc.collect()
    for _ in range(reps):
        for s in setups:
            data = _stream(s, events)
            decode_us[s.n].append(_time_decode(data) / events * 1e6)
            decoded = [messages.metrics_decoder.decode(b) for b in data]
            elapsed, actions = _time_handle(s, decoded)  # type: ignore[arg-type]
            handle_us[s.n].append(elapsed / events * 1e6)
            actions_per[s.n].append(actions / events)
            data = _stream(s, events)
            both_rate[s.n].append(events / _time_both(s, data))
            if s is setups[0]:
                t0 = time.perf_counter()
                for snap in decoded:
                    messages.encode(snap)
                encode_us.append((time.perf_counter() - t0) / events * 1e6)
    base = stat(both_rate[sizes[0]])
    table = Table(
        "core_throughput",
        "4. Scaler core throughput (snapshots/s through decode + Scaler.handle)",
        [
            "VAs",
            "groups",
            "decode µs/snap",
            "handle µs/snap",
            "snapshots/s (decode+handle)",
            "vs 10 VAs",
            "actions/snap",
        ],
    )
    for s in setups:
        groups = len({(v.namespace, v.model_id) for v in s.vas})
        rate = stat(both_rate[s.n])
        table.add(
            [
                s.n,
                groups,
                stat(decode_us[s.n]),
                stat(handle_us[s.n]),
                rate,
                f"{ratio(rate, base):.2f}x",
                fmt(stat(actions_per[s.n]).median),
            ],
            vas=s.n,
            groups=groups,
            decode_us=stat(decode_us[s.n]),
            handle_us=stat(handle_us[s.n]),
            snapshots_per_s=rate,
            ratio_to_smallest=ratio(rate, base),
            actions_per_snapshot=stat(actions_per[s.n]),
        )
    enc = stat(encode_us)
    table.notes += [
        f"{events:,} snapshots per pass, {reps} repetitions, sizes interleaved; groups of 1-4 variants, 1-4 pods per VA; "
        f"{HOT_SHARE:.0%} of snapshots saturated.",
        f"Reference in the same run: encoding one snapshot (the fetcher's publish step) takes {enc.fmt()} µs.",
    ]
    return [table, _profile(setups[-1], events)]


def _profile(s: _Setup, events: int) -> Table:
    table = Table(
        "core_profile",
        f"4b. Where the time goes: decode + handle at {s.n:,} VAs (cProfile, own time)",
        ["function", "own time", "with callees", "calls/snapshot"],
    )
    data = _stream(s, events)
    prof = cProfile.Profile()
    prof.enable()
    _time_both(s, data)
    prof.disable()
    st = pstats.Stats(prof)
    entries = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    top = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:10]
    for (file, line, func), (_cc, nc, tt, ct, _callers) in top:
        where = f"{_short(file)}:{line} {func}" if line else func
        table.add(
            [where, f"{tt / total:.1%}", f"{ct / total:.1%}", f"{nc / events:.2g}"],
            function=where,
            share=tt / total,
            cumulative_share=ct / total,
            calls_per_snapshot=nc / events,
        )
    # Named hot-path functions, whatever their rank: decode, digest, conditions, the decision.
    wanted = ("decode", "digest", "conditions", "check", "_decide", "_act", "analyze", "recommend", "status")
    for (file, line, func), (_cc, _nc, _tt, ct, _callers) in sorted(
        entries.items(), key=lambda kv: -kv[1][3]
    ):
        if func in wanted and (
            "services/scaler" in file or "messages" in file or "~" in file
        ):
            table.notes.append(f"{_short(file)}:{line} {func}: {ct / total:.1%} of the time with callees")
    table.notes.append(
        "Own time excludes callees; the profiler inflates small calls, so read shares, not µs."
    )
    return table


def _short(path: str) -> str:
    for marker in ("/services/", "/shared/", "/bench/"):
        if marker in path:
            return path[path.index(marker) + 1 :]
    return path.rsplit("/", 1)[-1]
