"""The inference gateway's metrics are untrusted too: whatever the gateway serves (scrape backend), or
whatever Prometheus answers to the gateway's query, costs only the queue — the VAs' snapshots keep
their pods' metrics, the failure is counted and logged, the reason says so, and no secret leaks.

`wva fetcher` runs as a process against a good pod, a model at zero (no pods), and a gateway that
answers each scrape with the next hostile body of `tests/hostile/endpoints.py`, then with good text."""

from __future__ import annotations

from aiohttp import web
from nats.aio.client import Client

from shared import messages, streams
from shared.subjects import Subjects
from tests.fixtures.http import HostileHttp
from tests.fixtures.servers import NatsServer
from tests.fixtures.services import ServiceProcess, StartService, metric_sum
from tests.hostile.conftest import NS, Feed, eventually, fetcher_env
from tests.hostile.endpoints import GOOD_POD, SECRET, bad_metrics, text

S = Subjects()
LIMIT = 64 * 1024
PASSWORD = "gw-pass-123"
QUEUES = """\
# TYPE inference_extension_flow_control_queue_size gauge
inference_extension_flow_control_queue_size{target_model_name="m"} 4.0
inference_extension_flow_control_queue_size{target_model_name="m-at-zero"} 2.0
"""


async def _targets(nc: Client, pod_address: str) -> Feed:
    js = nc.jetstream()
    await streams.ensure(js, S, streams.StreamSpec())
    serving = messages.Target(
        namespace=NS, name="llama", at=messages.utcnow(), model_id="m",
        pods=(messages.PodRef(name="llama-0", ready=True, address=pod_address),),
    )
    at_zero = messages.Target(namespace=NS, name="idle", at=messages.utcnow(), model_id="m-at-zero")
    for target in (serving, at_zero):
        await js.publish(S.targets(NS, target.name), messages.encode(target))
    return await Feed().attach(nc, "wva.metrics.>")


async def _failures(fetcher: ServiceProcess, backend: str) -> float:
    return metric_sum(await fetcher.metrics(), "wva_fetcher_gateway_failures_total", backend=backend)


async def test_each_hostile_gateway_answer_costs_only_the_queue(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService
) -> None:
    async def canary(_: web.Request) -> web.Response:
        return text(QUEUES.encode())

    canary_address = await hostile_http(canary)
    bad = list(bad_metrics(canary=canary_address, limit=LIMIT).values())

    async def gateway(request: web.Request) -> web.StreamResponse:
        served = hostile_http.hits[gateway_address] - 1  # this request is counted already
        if served < len(bad):
            return await bad[served][0](request)
        return text(QUEUES.encode())

    async def pod(_: web.Request) -> web.Response:
        return text(GOOD_POD.encode())

    gateway_address = await hostile_http(gateway)
    feed = await _targets(nats_client, await hostile_http(pod))
    fetcher = await wva_process(
        "fetcher",
        fetcher_env(
            nats_server.url, WVA_COLLECTOR="scrape", WVA_SCRAPE_MAX_BYTES=LIMIT,
            WVA_GATEWAY_METRICS_URL=f"http://wva:{PASSWORD}@{gateway_address}/metrics",
        ),
    )

    def snapshots(name: str) -> list[messages.MetricsSnapshot]:
        return feed.of(messages.MetricsSnapshot, name)

    await eventually(
        lambda: any(s.allocation.gateway_queue == 4.0 for s in snapshots("llama")), timeout=40,
        what=f"the queue once the gateway answers well\n{fetcher.tail()}",
    )
    assert fetcher.alive
    every = snapshots("llama") + snapshots("idle")
    for _, reason in bad:
        noted = [s for s in every if f"gateway queue unknown: gateway: {reason}" in s.reason]
        assert noted, reason
        assert all(s.allocation.gateway_queue is None for s in noted)
    # The pod's metrics were read all along: only the queue was unknown.
    assert all(s.status != "unavailable" and s.replicas[0].kv_cache_usage == 0.5 for s in snapshots("llama"))
    await eventually(lambda: any(s.allocation.gateway_queue == 2.0 for s in snapshots("idle")), timeout=5,
                     what="the queue of the model at zero")
    # aiohttp retries a GET once on a reused connection the server closed, so a hang-up may cost the
    # next body too: count the distinct reasons, each seen above.
    assert await _failures(fetcher, "scrape") >= len({reason for _, reason in bad})
    assert hostile_http.hits[canary_address] == 0  # the redirect was never followed
    log = fetcher.log()
    assert "could not read the gateway's queue" in log
    for secret in (SECRET, PASSWORD):
        assert secret not in log, secret
        assert not any(secret in s.reason for s in every), secret


async def test_a_failing_gateway_query_costs_only_the_queue_with_prometheus(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService
) -> None:
    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}

    async def prometheus(request: web.Request) -> web.Response:
        if "inference_extension_flow_control_queue_size" in request.query.get("query", ""):
            return web.Response(status=500, text=f"<html>{SECRET}</html>")
        return web.json_response(empty)

    address = await hostile_http(prometheus)
    feed = await _targets(nats_client, "127.0.0.1:1")
    fetcher = await wva_process("fetcher", fetcher_env(nats_server.url, WVA_PROMETHEUS_URL=f"http://{address}"))
    await eventually(lambda: len(feed.of(messages.MetricsSnapshot, "idle")) >= 2, timeout=15,
                     what=f"two snapshots of the model at zero\n{fetcher.tail()}")
    for name in ("llama", "idle"):
        snapshot = feed.of(messages.MetricsSnapshot, name)[-1]
        # The pods' queries answered (with no series): the snapshot is not unavailable, its queue unknown.
        assert snapshot.status != "unavailable", snapshot
        assert snapshot.allocation.gateway_queue is None
        assert "gateway queue unknown: HTTP 500 from Prometheus" in snapshot.reason
        assert SECRET not in snapshot.reason
    assert await _failures(fetcher, "prometheus") >= 2
    assert SECRET not in fetcher.log()
