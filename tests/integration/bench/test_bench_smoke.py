"""The benchmarks still run: ``python -m bench --smoke`` end to end, against the real servers.

Not a timed test: it asserts that every benchmark produced its table with the fields docs/benchmarks.md
relies on, so a change in the services cannot silently break the benchmarks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

EXPECTED = {
    "core_throughput": {"vas", "snapshots_per_s", "decode_us", "handle_us", "ratio_to_smallest"},
    "core_profile": {"function", "share", "cumulative_share"},
    "memory": {"component", "vas", "rss_kib_per_va", "traced_kib_per_va"},
    "latency_scaler": {"vas", "p50_ms", "p99_ms", "max_ms", "nats_floor_p50_ms"},
    "fetch_cycle": {
        "vas",
        "mode",
        "queries_per_cycle",
        "cycle_ms",
        "prometheus_cpu_ms_per_cycle",
        "kib_per_cycle",
    },
    "latency_invalidation": {"vas", "p50_ms", "p99_ms", "max_ms"},
    "latency_template": {
        "vas",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "to_invalidation_p50_ms",
        "invalidation_to_snapshot_p50_ms",
        "fetch_interval_s",
    },
    "lab_replica_model": {"rps", "seconds", "reference", "fast", "speedup"},
    "failover": {"service", "backend", "ttl_s", "kills", "missed", "taken_p50_s", "failover_p50_s", "failover_p99_s", "samples"},
    "fetch_replicas": {"replicas", "vas_per_replica_min", "queries_per_cycle", "cycle_ms", "prometheus_cpu_ms_per_interval"},
    "lab_azure": {"label", "policies", "requests", "simulated_s", "wall_s", "ratio"},
}


@pytest.mark.timeout(240)  # about 70 s alone; beside the other test workers more
def test_smoke_run_writes_every_table(tmp_path: Path) -> None:
    try:
        proc = subprocess.run(
            [sys.executable, "-u", "-m", "bench", "--smoke", "--out", str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=235,
        )
    except subprocess.TimeoutExpired as exc:  # say which benchmark it was in
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"the smoke run took over {exc.timeout:g}s; its output ended with:\n{out[-3000:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.md").read_text().startswith("## wva benchmarks")
    assert doc["mode"] == "smoke"
    assert {"cores", "python", "nats_server", "prometheus"} <= doc["machine"].keys()
    assert "not found" not in (doc["machine"]["nats_server"], doc["machine"]["prometheus"])
    benchmarks = doc["benchmarks"]
    for key, fields in EXPECTED.items():
        table = benchmarks[key]
        assert not table["skipped"], f"{key}: {table['skipped']}"
        assert table["rows"], key
        for row in table["rows"]:
            assert fields <= row.keys(), (key, fields - row.keys())
    modes = {row["mode"]: row for row in benchmarks["fetch_cycle"]["rows"]}
    assert set(modes) == {"batched", "batched-gzip", "per-va"}
    # The point of batching, checked loosely enough for a noisy machine: fewer queries, every VA answered.
    assert modes["batched"]["queries_per_cycle"]["median"] < modes["per-va"]["queries_per_cycle"]["median"]
    assert all(row["ok_share"]["median"] == 1.0 for row in modes.values())
    assert all(row["measured"] == row["events"] for row in benchmarks["latency_scaler"]["rows"])
    # 2c: every template change produced its invalidation and a fresh snapshot from the invalidation path.
    for row in benchmarks["latency_template"]["rows"]:
        assert row["measured"] == row["events"] and row["without_invalidation"] == 0, row
    # 7, 8: the killed scaler's work (leases in the bucket) and the killed fetcher's (Lease objects) were
    # taken over, and replicas shared the fetch work among them
    killed = {(row["service"], row["backend"]): row for row in benchmarks["failover"]["rows"]}
    assert set(killed) == {("scaler", "nats"), ("fetcher", "kubernetes")}
    for row in killed.values():
        assert row["missed"] == 0 and row["failover_p50_s"] is not None and row["taken_p50_s"] == row["taken_p50_s"], row
    replicas = {row["replicas"]: row for row in benchmarks["fetch_replicas"]["rows"]}
    assert set(replicas) == {1, 2, 3} and replicas[1]["vas_per_replica_min"] == 10
    assert replicas[2]["vas_per_replica_min"] < 10
