"""`wva sandbox --replicas 2 --nats-cluster 3`: two of each service on a three-node NATS cluster with
routes on localhost (R3 streams). The replicas share the partitions (the view says who holds what),
one scaler decides for the model group at a time, the recording replays replica by replica to every
decision, and every process is gone at the end."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.sandbox import CI_FETCH_INTERVAL, CI_STABILIZATION, run_sandbox, running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_two_of_each_service_on_a_three_node_nats(tmp_path: Path) -> None:
    # The scrape backend (no Prometheus on PATH): nine wva and NATS processes are enough for two cores.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    run = run_sandbox(tmp_path / "run", "--replicas", "2", "--nats-cluster", "3", "--duration", "25s", env=env, timeout=200)
    assert "3-node cluster" in run.output and "scaler-2:" in run.output and "fetcher-2:" in run.output
    assert " exited with " not in run.output and "result:" in run.output, run.output
    # every service's partitions are shared, and the view said so
    for service in ("scaler", "fetcher"):
        holders = set(re.findall(rf"owners\s+(\S+) \({service}\) holds (\d+)", run.output))
        assert len({who for who, _ in holders}) == 2, (service, holders)
    assert re.search(r"owners\s+\S+ \(watcher\) holds 1: watcher", run.output), run.output
    # one scaler decides for the group at a time: its decisions never interleave with another's
    entries = [json.loads(line) for line in run.record.read_text().splitlines() if line.strip()]
    replicas = [e["event"]["replica"] for e in entries if e["event"]["kind"] == "decision.v1"]
    assert replicas and all(replicas)
    runs = [replicas[0]] + [b for a, b in itertools.pairwise(replicas) if a != b]
    assert len(runs) == len(set(runs)), runs  # each replica's decisions in one stretch (handed over, not back)
    # the recording replays, replica by replica, to every decision
    config = tmp_path / "scaling.yaml"
    config.write_text(
        f"default: |\n  scaleDownStabilizationSeconds: {CI_STABILIZATION:g}\n  staleAfterSeconds: {3 * CI_FETCH_INTERVAL:g}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "replay", str(run.record), "--check", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"replay: {len(replicas)} decisions, {len(replicas)} recorded, identical" in proc.stderr
    names = [name for _, name in run.pids()]
    assert names.count("nats-server") == 3 and {"scaler", "scaler-2", "fetcher-2", "watcher-2"} <= set(names)
    assert not [(pid, name) for pid, name in run.pids() if running(pid)]
