"""Scaler issue, end to end: nothing scales while Prometheus is stopped, and scaling resumes when it
returns. Watcher, fetcher and scaler run as separate processes against the emulated cluster, with a
real Prometheus scraping the emulated vLLM pods under a load that needs more replicas."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.sandbox import scenario
from services.sandbox.cluster import Cluster
from services.sandbox.pipeline import Intervals, Pipeline
from services.sandbox.servers import PROMETHEUS_INSTALL_HINT
from tests.fixtures.binaries import require_binary
from tests.fixtures.sandbox import CI_CHEAP_SERVER

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SCENARIO = """
name: outage
duration: 600
seed: 1
namespaces: [llm]
models:
  - id: m/outage
    namespace: llm
    requests:
      input_tokens: {kind: fixed, value: 512}
      output_tokens: {kind: fixed, value: 128}
    load: {kind: constant, rps: 14}
    variants:
      - name: only
        cost: "10"
        accelerator: L40S
        min_replicas: 1
        max_replicas: 4
        initial_replicas: 1
        startup_seconds: 0.2""" + CI_CHEAP_SERVER


async def test_nothing_scales_while_prometheus_is_stopped(tmp_path: Path) -> None:
    binary = require_binary("prometheus", PROMETHEUS_INSTALL_HINT)
    spec = scenario.parse_scenario(SCENARIO, source="outage", base_dir=tmp_path)
    intervals = Intervals(fetch=1.0, scrape=1.0, reconcile=1.0, stabilization=30.0, rate_window=5.0)
    async with (
        Pipeline(
            run_dir=tmp_path,
            kubeconfig=tmp_path / "kubeconfig.yaml",
            sd_file=tmp_path / "targets.json",
            intervals=intervals,
            prometheus=binary,
        ) as pipe,
        Cluster(spec, prometheus_sd_out=tmp_path / "targets.json", kubeconfig_out=tmp_path / "kubeconfig.yaml") as cluster,
    ):
        await cluster.wait_ready()
        await pipe.start()
        prometheus = next(c for c in pipe.children if c.name == "prometheus")
        await prometheus.stop()  # before it has scraped anything the scaler could use
        load = asyncio.create_task(cluster.run_load())
        try:
            # Saturating load, no metrics: the scaler must hold (it would need ~3 replicas).
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline:
                assert cluster.spec_replicas("only") == 1, "scaled while Prometheus was down"
                await asyncio.sleep(0.25)
            scaler_log = (tmp_path / "scaler.log").read_text()
            assert "hold_metrics_unavailable" in scaler_log
            fetcher_log = (tmp_path / "fetcher.log").read_text()
            assert "unavailable" in fetcher_log

            prometheus.start(pipe.pids_file)  # same port, config and data directory
            deadline = time.monotonic() + 45
            while cluster.spec_replicas("only") == 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
            assert cluster.spec_replicas("only") > 1, "did not scale once Prometheus was back"
        finally:
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
