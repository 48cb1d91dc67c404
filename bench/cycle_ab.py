"""Benchmark 1's batched fetch cycle, this checkout against another one, in the same run.

``python -m bench.cycle_ab OTHER_CHECKOUT [--vas 1000] [--cycles 20]``

One installation (a real Prometheus scraping the emulated vLLM pods of ``--vas`` VAs, a nats-server),
two child processes: each imports the services and ``bench.fetch_cycle`` of its own checkout and runs
the batched ``Fetcher.cycle()`` exactly as benchmark 1 does (real ``PrometheusCollector``, cache,
tracker, publishing to NATS), one cycle at a time when told, alternately (ABBA), so both see the same
noise. Prints each side's cycle ``duration_ms`` (median, interquartile range, min) and the median of
the paired ratios. This is how docs/benchmarks.md compares a change with the code before it on a
shared machine, where two separate runs minutes apart differ more than the change does.

The other checkout needs nothing installed: ``git archive <commit> | tar -x -C /tmp/base`` will do; it
runs with this checkout's virtualenv.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import fetch_cycle

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import asyncio, json, sys
root, prometheus_url, nats_url, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, root)
from bench import fetch_cycle, workload

class Prometheus:
    url = prometheus_url

async def main():
    inst = fetch_cycle.Installation(Prometheus(), nats_url, {}, 5.0)
    nc, publish = await fetch_cycle._publisher(nats_url)
    fetcher, _ = fetch_cycle._fetcher(inst, "batched", [workload.target(va) for va in fetch_cycle.vas_for(n)], publish)
    await fetcher.cycle()  # warm-up
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "cycle":
        report = await fetcher.cycle()
        print(json.dumps({"ms": report.duration_ms, "ok": report.ok}), flush=True)
    await fetcher.aclose()
    await nc.drain()

asyncio.run(main())
"""


async def compare(roots: dict[str, Path], *, vas: int, cycles: int) -> dict[str, list[float]]:
    async with fetch_cycle.installation([vas], scrape_interval=5.0) as inst:
        return await asyncio.to_thread(_alternate, roots, inst.prometheus.url, inst.nats_url, vas, cycles)


def _alternate(
    roots: dict[str, Path], prometheus_url: str, nats_url: str, vas: int, cycles: int
) -> dict[str, list[float]]:
    children = {
        side: subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(root), prometheus_url, nats_url, str(vas)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        for side, root in roots.items()
    }
    try:
        for side, child in children.items():
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the {side} checkout's fetcher did not start")
        found: dict[str, list[float]] = {side: [] for side in roots}
        for rep in range(cycles):
            for side in ("this", "other") if rep % 2 == 0 else ("other", "this"):
                child = children[side]
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write("cycle\n")
                child.stdin.flush()
                report = json.loads(child.stdout.readline())
                if report["ok"] != vas:
                    raise RuntimeError(f"{side}: {report['ok']} of {vas} snapshots ok")
                found[side].append(report["ms"])
                time.sleep(0.5)
        return found
    finally:
        for child in children.values():
            if child.stdin is not None:
                child.stdin.write("stop\n")
                child.stdin.flush()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cycle_ab", description=__doc__.splitlines()[0])
    parser.add_argument(
        "other", type=Path, help="the other checkout (a directory with services/, shared/, bench/)"
    )
    parser.add_argument("--vas", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=20, help="cycles per side")
    args = parser.parse_args()
    roots = {"this": ROOT, "other": args.other.resolve()}
    found = asyncio.run(compare(roots, vas=args.vas, cycles=args.cycles))
    for side, label in (("this", str(ROOT)), ("other", str(args.other))):
        ms = found[side]
        q1, _, q3 = statistics.quantiles(ms, n=4)
        print(
            f"{label}: cycle median {statistics.median(ms):.0f} ms [IQR {q1:.0f}..{q3:.0f}], min {min(ms):.0f} ({len(ms)} cycles)"
        )
    ratios = [a / b for a, b in zip(found["this"], found["other"], strict=True)]
    print(f"this ÷ other, paired: median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
