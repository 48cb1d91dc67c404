"""Issue #12 fault tests: the whole pipeline (watcher, fetcher and scaler as processes, a real
nats-server and Prometheus, the emulated cluster under load) through a kill -9 of nats-server —
restarted with its store, then with an empty one — and through a Prometheus outage.

In each case: no service crashes, nothing is scaled down on missing data, the pipeline is back within
one fetch interval + one reconcile after the fault ends (plus the reconnect and the followers' check,
which the bounds below name), and a readiness check, a metric, a log line or a VA condition tells the
operator what happened.

The Prometheus outage lasts 10 s, not 60: with these intervals (fetch 1 s, staleness 3 s,
stabilization 4 s) 10 s already takes the pipeline through every state a longer outage would — the
last snapshot goes stale, every fetch gives an unavailable snapshot, and more than two whole
stabilization windows pass with metrics unusable — so 60 s would only repeat them.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import nats
import nats.js.errors
import pytest
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from services.sandbox import scenario
from services.sandbox.cluster import Cluster
from services.sandbox.kubeapi import resources as kube_resources
from services.sandbox.pipeline import SERVICES, Intervals, Pipeline
from shared import messages, streams
from shared.subjects import Subjects
from tests.fixtures.sandbox import CI_CHEAP_SERVER
from tests.fixtures.services import metric_sum
from tests.hostile.conftest import Feed, eventually, last_message

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

S = Subjects()
NS = "llm"
METRICS_HOLDS = {"hold_metrics_unavailable", "hold_stale_metrics", "hold_invalidated", "hold_unresolved"}


def _scenario(*, rps: float, initial: int) -> str:
    return f"""
name: faults
duration: 600
seed: 1
namespaces: [{NS}]
models:
  - id: m/faults
    namespace: {NS}
    requests:
      input_tokens: {{kind: fixed, value: 512}}
      output_tokens: {{kind: fixed, value: 128}}
    load: {{kind: constant, rps: {rps}}}
    variants:
      - name: only
        cost: "10"
        accelerator: L40S
        min_replicas: 1
        max_replicas: 4
        initial_replicas: {initial}
        startup_seconds: 0.2
{CI_CHEAP_SERVER}"""


@asynccontextmanager
async def _pipeline(tmp_path: Path, *, rps: float, initial: int, stabilization: float) -> AsyncIterator[tuple[Pipeline, Cluster, Client]]:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus must be on PATH (apt-get install prometheus)"
    spec = scenario.parse_scenario(_scenario(rps=rps, initial=initial), source="faults", base_dir=tmp_path)
    intervals = Intervals(fetch=1.0, scrape=1.0, reconcile=1.0, stabilization=stabilization, rate_window=5.0)
    async with (
        Pipeline(
            run_dir=tmp_path, kubeconfig=tmp_path / "kubeconfig.yaml", sd_file=tmp_path / "targets.json",
            intervals=intervals, prometheus=prometheus, extra_env={"WVA_STREAM_CHECK_INTERVAL": "1s"},
        ) as pipe,
        Cluster(spec, prometheus_sd_out=tmp_path / "targets.json", kubeconfig_out=tmp_path / "kubeconfig.yaml") as cluster,
    ):
        await cluster.wait_ready()
        await pipe.start()
        load = asyncio.create_task(cluster.run_load())
        nc = await nats.connect(pipe.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        try:
            yield pipe, cluster, nc
        finally:
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
            await nc.close()
            assert pipe.crashed() == [], [f"{c.name}: {c.log_tail()}" for c in pipe.crashed()]


async def _get(pipe: Pipeline, service: str, path: str) -> tuple[int, str] | None:
    url = f"http://127.0.0.1:{pipe.service_ports[service]}{path}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session, session.get(url) as resp:
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _ready(pipe: Pipeline, service: str) -> bool:
    answer = await _get(pipe, service, "/readyz")
    return answer is not None and answer[0] == 200


async def _metric(pipe: Pipeline, service: str, name: str, **labels: str) -> float:
    answer = await _get(pipe, service, "/metrics")
    assert answer is not None, f"{service} /metrics did not answer"
    samples = [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(answer[1]) for s in f.samples]
    return metric_sum(samples, name, **labels)


def _decided_on_data_since(decisions: Feed, since: float) -> bool:
    return any(
        d.at.timestamp() >= since and d.reason not in METRICS_HOLDS for d in decisions.of(messages.Decision, "only")
    )


async def _watch_replicas(cluster: Cluster, floor: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        assert cluster.spec_replicas("only") >= floor, "scaled down while the pipeline had no data"
        await asyncio.sleep(0.2)


@asynccontextmanager
async def _no_scale_down(cluster: Cluster) -> AsyncIterator[None]:
    """Fails the test if the variant's replicas ever go below what they were on entry."""
    stop = asyncio.Event()
    guard = asyncio.create_task(_watch_replicas(cluster, cluster.spec_replicas("only"), stop))
    try:
        yield
    finally:
        stop.set()
        await guard


async def test_nats_killed_then_restarted_with_its_store_and_with_an_empty_one(tmp_path: Path) -> None:
    async with _pipeline(tmp_path, rps=4, initial=2, stabilization=60) as (pipe, cluster, nc):
        decisions = await Feed().attach(nc, "wva.decisions.>")
        await eventually(lambda: _decided_on_data_since(decisions, 0), timeout=30, what="a decision on data")
        server = pipe.child("nats-server")
        for store in ("kept", "wiped"):
            disconnects = {s: await _metric(pipe, s, "wva_nats_connection_events_total", event="disconnected") for s in SERVICES}
            async with _no_scale_down(cluster):
                server.signal(signal.SIGKILL)
                await eventually(lambda: server.exit_code() is not None, timeout=10, what="nats-server gone")

                async def none_ready() -> bool:
                    return not any([await _ready(pipe, s) for s in SERVICES])

                await eventually(none_ready, timeout=10, what="every /readyz false while NATS is down")
                await asyncio.sleep(2)  # the fault lasts a little
                if store == "wiped":
                    shutil.rmtree(tmp_path / "jetstream")
                server.start(pipe.pids_file)
                await eventually(lambda: nc.is_connected, timeout=15, what="nats-server back")
                back = time.time()
                consumed = await _metric(pipe, "scaler", "wva_scaler_events_total", kind="MetricsSnapshot")
                snapshots = await Feed().attach(nc, "wva.metrics.>")

                async def recovered(consumed: float = consumed, snapshots: Feed = snapshots) -> bool:
                    return (
                        all([await _ready(pipe, s) for s in SERVICES])
                        and bool(snapshots.of(messages.MetricsSnapshot, "only"))  # the fetcher publishes again
                        # … and the scaler reads them, and decides on them.
                        and await _metric(pipe, "scaler", "wva_scaler_events_total", kind="MetricsSnapshot") > consumed
                        and decisions.of(messages.Decision, "only")[-1].reason not in METRICS_HOLDS
                    )

                await eventually(recovered, timeout=20, what=f"the pipeline back on fresh data ({store})")
                took = time.time() - back
                # fetch (1 s) + reconcile (1 s) after the fault, plus reconnect (1 s apart) and the
                # followers' check (2 s idle), with margin for a loaded machine.
                assert took < 10, f"{store}: recovered {took:.1f}s after NATS was back"
            if store == "wiped":
                js = nc.jetstream()
                # The streams are back, with the cluster's state: the watcher republished the target
                # (at its next stream check, which may come after the fetcher's and the scaler's).
                async def republished(js: nats.js.JetStreamContext = js) -> bool:
                    return await last_message(js, S.stream_name(streams.TARGETS), S.targets(NS, "only")) is not None

                await eventually(republished, timeout=10, what="the watcher republished the target")
                last = await js.get_last_msg(S.stream_name(streams.TARGETS), S.targets(NS, "only"))
                assert isinstance(messages.targets_decoder.decode(last.data), messages.Target)
                await js.get_last_msg(S.stream_name(streams.METRICS), S.metrics(NS, "only"))
                logs = {c.name: c.log_path.read_text(errors="replace") for c in pipe.children if c.name in SERVICES}
                assert any("streams were missing" in text for text in logs.values())
                assert all("lost the consumer" in logs[s] for s in ("fetcher", "scaler"))
            for service in SERVICES:  # what an operator's dashboard shows
                assert await _metric(pipe, service, "wva_nats_connection_events_total", event="disconnected") > disconnects[service]


async def test_prometheus_outage_holds_then_scales_on_fresh_data(tmp_path: Path) -> None:
    """Three replicas for a load one can carry: only data may scale it down, and there is none."""
    async with _pipeline(tmp_path, rps=2, initial=3, stabilization=4) as (pipe, cluster, nc):
        prometheus = pipe.child("prometheus")
        await prometheus.stop()  # before it has scraped anything the scaler could use
        decisions = await Feed().attach(nc, "wva.decisions.>")
        async with _no_scale_down(cluster):
            await asyncio.sleep(10)
        assert cluster.spec_replicas("only") == 3
        # The scaler publishes a decision when it changes: the last one says it holds for lack of data.
        last = await nc.jetstream().get_last_msg(S.stream_name(streams.EVENTS), S.decisions(NS, "only"))
        held = messages.events_decoder.decode(last.data)
        assert isinstance(held, messages.Decision) and held.reason in METRICS_HOLDS, held
        assert {d.reason for d in decisions.of(messages.Decision, "only")} <= METRICS_HOLDS
        # What the operator sees: the VA's condition, and the fetcher's own metrics.
        va = cluster.store_api.store.find(kube_resources.VARIANT_AUTOSCALINGS, NS, "only")
        assert va is not None
        condition = {c["type"]: c for c in va.get("status", {}).get("conditions", [])}["MetricsAvailable"]
        assert condition["status"] == "False" and condition["reason"] == "PrometheusError", condition
        assert "Prometheus" in condition["message"] and "http" not in condition["message"], condition
        assert await _metric(pipe, "fetcher", "wva_fetcher_snapshots_total", status="unavailable") > 0
        assert await _metric(pipe, "fetcher", "wva_fetcher_queries_total", backend="prometheus", outcome="error") > 0

        prometheus.start(pipe.pids_file)  # same port, configuration and data
        back = time.time()
        await eventually(lambda: _decided_on_data_since(decisions, back), timeout=20, what="a decision on fresh data")
        took = time.time() - back
        # Prometheus's start and first scrapes (1 s apart, two for a rate) + fetch (1 s) + reconcile (1 s).
        assert took < 12, f"recovered {took:.1f}s after Prometheus was back"
        # Now that there is data, the spare replicas go, one stabilization window (4 s) at a time.
        await eventually(lambda: cluster.spec_replicas("only") < 3, timeout=20, what="a scale-down on data")
