"""Issue #12 item 4 and the API-server fault tests: a Kubernetes API that resets connections, hangs, or
answers 409/410/429/500 never crashes the scaler, never blocks it past its budget, and the step lands
once the fault ends; the operator sees what happened (decision outcome, counters, VA status)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nats.aio.msg import Msg

from services.sandbox.kubeapi import KubeApiEmulator
from services.scaler import telemetry
from shared import messages
from shared.subjects import SubjectKind
from tests.fixtures.scaler import NS, S, eventually, running_scaler


async def _watch_decisions(cluster: Any) -> tuple[list[messages.Decision], Any]:
    seen: list[messages.Decision] = []

    async def on(msg: Msg) -> None:
        decision = messages.events_decoder.decode(msg.data)
        assert isinstance(decision, messages.Decision)
        seen.append(decision)

    return seen, await cluster.nc.subscribe(S.wildcard(SubjectKind.DECISIONS), cb=on)


async def test_connection_resets_on_every_call_are_retried_and_never_kill_the_scaler(
    scaler_setup: Any, kube_api: KubeApiEmulator
) -> None:
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=1, cost="10")
    t = await cluster.target("a", cost=10)
    # aiohttp raises ServerDisconnectedError (not an OSError) for each of these.
    kube_api.faults.reset(times=1, path=r"/configmaps", verb="list")
    kube_api.faults.reset(times=1, path=r"/variantautoscalings$", verb="list")
    kube_api.faults.reset(times=2, path=r"/deployments/a$", verb="get")
    kube_api.faults.reset(times=1, path=r"/deployments/a/scale$", verb="patch")
    kube_api.faults.reset(times=2, path=r"/variantautoscalings/a/status$", verb="patch")
    # running_scaler fails the test unless the service exits 0 when stopped: nothing escaped.
    async with running_scaler(settings()):
        await cluster.snapshot(t, [0.9])
        assert await eventually(lambda: scaled(kube_api, "a"))
        await eventually(lambda: _applied(kube_api, "a"))
    assert not kube_api.faults.failures  # every injected reset happened


async def test_a_hung_api_server_costs_one_budget_then_the_step_lands(
    scaler_setup: Any, kube_api: KubeApiEmulator
) -> None:
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=1, cost="10")
    seen, sub = await _watch_decisions(cluster)
    failed = telemetry.ACTUATIONS.labels(outcome="failed")
    before = failed._value.get()
    t = await cluster.target("a", cost=10)
    kube_api.faults.add_latency(4.0, path=r"/deployments/a$", verb="get", times=1)  # hangs past the 1 s budget
    async with running_scaler(settings(actuation_budget=1.0)):
        started = time.monotonic()
        await cluster.snapshot(t, [0.9])
        decision = await eventually(lambda: _first(seen, lambda d: d.outcome == "failed"))
        assert time.monotonic() - started < 5.0  # bounded by the 1 s budget (plus the request's own timeout)
        assert "not applied (failed)" in decision.detail and not decision.applied
        assert failed._value.get() == before + 1
        # The fault is over (the hang was one request): after the backoff the step lands.
        assert await eventually(lambda: scaled(kube_api, "a"), timeout=15)
        applied = await eventually(lambda: _first(seen, lambda d: d.outcome == "applied"))
        assert applied.desired == 2
    await sub.unsubscribe()


async def test_throttling_conflicts_and_server_errors_are_retried_within_one_step(
    scaler_setup: Any, kube_api: KubeApiEmulator
) -> None:
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=1, cost="10")
    t = await cluster.target("a", cost=10)
    kube_api.faults.fail(429, times=1, path=r"/deployments/a$", verb="get", retry_after=0)
    kube_api.faults.fail(409, times=1, path=r"/deployments/a/scale$", verb="patch")
    kube_api.faults.fail(500, times=1, path=r"/deployments/a/scale$", verb="patch")
    async with running_scaler(settings()):
        await cluster.snapshot(t, [0.9])
        assert await eventually(lambda: scaled(kube_api, "a"))
    assert not kube_api.faults.failures


async def test_expired_and_failing_watches_of_the_scalers_authority_recover(
    scaler_setup: Any, kube_api: KubeApiEmulator
) -> None:
    cluster, settings = scaler_setup
    await cluster.add_variant("a", replicas=1, cost="10")
    t = await cluster.target("a", cost=10)
    expired = telemetry.WATCH_RESTARTS.labels(kind="va", reason="expired")
    seen, sub = await _watch_decisions(cluster)
    async with running_scaler(settings()):
        await eventually(lambda: _true(kube_api.faults.count(verb="watch", pattern="variantautoscalings") > 0))
        before = expired._value.get()
        lists = kube_api.faults.count(verb="list", pattern="variantautoscalings")
        # The VA is deleted while the watches are away and the history compacted: they come back to
        # 410, re-list after two 500s, and the scaler's authority no longer has the VA.
        kube_api.faults.add_latency(0.3, verb="watch", times=4)
        kube_api.faults.fail(500, times=2, path=r"/variantautoscalings$", verb="list")
        kube_api.faults.drop_watches()
        kube_api.store.delete("variantautoscalings", NS, "a")
        kube_api.faults.compact()
        await eventually(lambda: _true(expired._value.get() > before))
        # Two failed lists and the one that succeeds; then give the answer a moment to be read.
        await eventually(lambda: _true(kube_api.faults.count(verb="list", pattern="variantautoscalings") >= lists + 3))
        await asyncio.sleep(0.3)
        await cluster.snapshot(t, [0.9])  # what NATS still says about a
        refused = await eventually(lambda: _first(seen, lambda d: d.outcome == "refused"), timeout=5)
        assert "no VariantAutoscaling llm/a" in refused.detail
    await sub.unsubscribe()
    assert kube_api.store.get("deployments", NS, "a")["spec"]["replicas"] == 1


# The test reads through the emulator's store, not over HTTP, so that the faults meant for the
# scaler's requests are not spent on the test's own.


async def scaled(kube_api: KubeApiEmulator, name: str) -> bool:
    return int(kube_api.store.get("deployments", NS, name)["spec"]["replicas"]) > 1


async def _applied(kube_api: KubeApiEmulator, name: str) -> bool:
    status = dict(kube_api.store.get("variantautoscalings", NS, name).get("status") or {})
    return bool(status.get("actuation") == {"applied": True})


async def _first(items: list[Any], pred: Any) -> Any:
    await asyncio.sleep(0)
    return next((i for i in items if pred(i)), None)


async def _true(value: bool) -> bool:
    return value
