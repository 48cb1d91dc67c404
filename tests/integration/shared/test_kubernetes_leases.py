"""Leases in Lease objects of the emulated Kubernetes API over HTTP, through kubernetes-asyncio
(shared/kubeleases.py, ``WVA_LEASE_BACKEND=kubernetes``): a fair share without ping-pong, expiry by
observation with fencing first, a clean hand-over, hostile holders, and a missing RBAC that leaves the
service running but not ready."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from services.sandbox.kubeapi import KubeApiEmulator
from services.sandbox.kubeapi import resources as kube_resources
from shared import lifecycle, partitions
from shared.kubeleases import PART_OF_LABEL, SERVICE_LABEL, KubernetesLeaseStore
from shared.leases import ROUND_FAILURES, Leases
from shared.observability import MESSAGES_REJECTED
from shared.settings import Settings
from tests.fixtures.cluster import api_client_for
from tests.fixtures.servers import NatsServer
from tests.fixtures.services import StartService
from tests.hostile.conftest import eventually
from tests.integration.shared.test_leases import rounds, settled

NS = "wva-system"
TTL = 1.5
ALL = frozenset(partitions.numbered(16))

MakeLeases = Callable[..., Awaitable[Leases]]


@pytest.fixture
async def make_leases(kubeconfig: Path) -> AsyncIterator[MakeLeases]:
    clients: list[client.ApiClient] = []

    async def make(identity: str, *, service: str = "scaler", total: int = 16) -> Leases:
        api = await api_client_for(kubeconfig)  # one client per replica, as each process has its own
        clients.append(api)
        store = KubernetesLeaseStore(api, namespace=NS, ttl=TTL)
        return Leases(store, service=service, identity=identity, partitions=partitions.numbered(total), ttl=TTL)

    try:
        yield make
    finally:
        for api in clients:
            await api.close()


def holders(kube_api: KubeApiEmulator, service: str = "scaler") -> dict[str, str]:
    """partition -> holderIdentity of every partition Lease the API has now."""
    items, _ = kube_api.store.list(kube_resources.LEASES, NS, label_selector=f"{SERVICE_LABEL}={service}")
    prefix = f"wva-{service}-"
    return {
        o["metadata"]["name"][len(prefix):]: o["spec"]["holderIdentity"]
        for o in items if o["metadata"]["name"].startswith(prefix)
    }


class HolderLog:
    """Every change of holder of the partition Leases, as the API's change feed shows it."""

    def __init__(self, kube_api: KubeApiEmulator) -> None:
        self.holder: dict[str, str | None] = dict(holders(kube_api))
        self.changes: list[tuple[str, str | None]] = []
        self._remove = kube_api.store.add_listener(self._on)

        self.writes: list[tuple[float, str, str | None]] = []  # (when, partition, holder) of every write

    def _on(self, change: Any) -> None:
        name = change.object["metadata"]["name"]
        if change.object.get("kind") != "Lease" or not name.startswith("wva-scaler-"):
            return
        partition = name[len("wva-scaler-"):]
        new = None if change.type == "DELETED" else change.object["spec"]["holderIdentity"]
        self.writes.append((time.monotonic(), partition, new))
        if self.holder.get(partition) != new:
            self.holder[partition] = new
            self.changes.append((partition, new))

    def close(self) -> None:
        self._remove()


async def test_two_replicas_share_sixteen_partitions_eight_each_without_ping_pong(
    make_leases: MakeLeases, kube_api: KubeApiEmulator
) -> None:
    a, b = await make_leases("a-1"), await make_leases("b-1")
    await rounds(a, b)
    assert len(a.owned) == 16 and not b.owned  # a came first
    log = HolderLog(kube_api)
    try:
        await asyncio.sleep(a.period)
        for _ in range(8):  # a renewal period between rounds, as the loop does
            await rounds(a, b)
            await asyncio.sleep(a.period)
        assert (len(a.owned), len(b.owned)) == (8, 8) and not a.owned & b.owned
        seen = holders(kube_api)
        assert {p for p, h in seen.items() if h == "a-1"} == a.owned and {p for p, h in seen.items() if h == "b-1"} == b.owned
        # eight given back by a, the same eight taken by b, nothing else moved in eight rounds
        assert sorted(p for p, h in log.changes if h is None) == sorted(b.owned), log.changes
        assert sorted(p for p, h in log.changes if h == "b-1") == sorted(b.owned), log.changes
        assert len(log.changes) == 16, log.changes
        obj = kube_api.store.get(kube_resources.LEASES, NS, "wva-scaler-0")
        assert obj["metadata"]["labels"] == {PART_OF_LABEL: "wva", SERVICE_LABEL: "scaler"}
        assert obj["spec"]["leaseDurationSeconds"] == 2  # ceil(1.5)
        assert obj["spec"]["renewTime"] and obj["spec"]["acquireTime"]
        assert kube_api.store.find(kube_resources.LEASES, NS, "wva-members-scaler-b-1") is not None
    finally:
        log.close()


async def test_a_replica_that_stops_renewing_is_fenced_before_the_other_takes_over(
    make_leases: MakeLeases, kube_api: KubeApiEmulator
) -> None:
    a, b = await make_leases("a-1"), await make_leases("b-1")
    log = HolderLog(kube_api)
    runs = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        deadline = time.monotonic() + 10
        while not (len(a.owned) == len(b.owned) == 8) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        theirs = a.owned
        assert len(theirs) == 8 and len(b.owned) == 8
        runs[0].cancel()  # a stops renewing, without giving anything back (a dead or stopped process)
        stopped = time.monotonic()
        overlap, fenced_at, first_taken_at = [], None, None
        while True:  # sampled every 5 ms, the last sample after b took everything
            now = time.monotonic()
            a_acts, b_acts = any(a.valid(p) for p in theirs), bool(b.owned & theirs)
            if a_acts and b_acts:
                overlap.append(now - stopped)
            if fenced_at is None and not a_acts:
                fenced_at = now - stopped
            if first_taken_at is None and b_acts:
                first_taken_at = now - stopped
            if b.owned == ALL or now - stopped > 3 * TTL:
                break
            await asyncio.sleep(0.005)
        took = time.monotonic() - stopped
        assert b.owned == ALL, f"b never took over: {b.report()}"
        assert not overlap, f"both acted on a partition at {overlap}"
        assert fenced_at is not None and first_taken_at is not None and fenced_at < first_taken_at
        # a's last renewal was sent at most a period before it stopped; b's clock starts when it first
        # reads that renewal (within a period of it), the lease expires a TTL later and b's next
        # round (within a period) takes it
        assert TTL - a.period <= took <= TTL + 2 * a.period + 0.2, took
        print(f"fenced {fenced_at:.3f}s, first taken {first_taken_at:.3f}s, all taken {took:.3f}s after the stop")
        assert not a.valid("0") and not any(a.valid(p) for p in a.owned)
        # each of a's Leases was taken only once unchanged for a whole TTL after a's last write to it
        # (as the API server saw the writes; the emulator runs on this test's clock)
        for partition in theirs:
            last = max(at for at, p, h in log.writes if p == partition and h == "a-1")
            taken = min(at for at, p, h in log.writes if p == partition and h == "b-1" and at > last)
            assert taken - last >= TTL, (partition, taken - last)
    finally:
        log.close()
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)


async def test_a_clean_release_hands_over_at_the_next_round(make_leases: MakeLeases, kube_api: KubeApiEmulator) -> None:
    a, b = await make_leases("a-1"), await make_leases("b-1")
    await settled(a, b)
    await a.release()
    assert kube_api.store.find(kube_resources.LEASES, NS, "wva-members-scaler-a-1") is None
    await rounds(b)
    assert b.owned == ALL  # a's member Lease is gone too, so b's share is all of them at once
    assert set(holders(kube_api).values()) == {"b-1"}


async def test_a_forged_holder_is_counted_not_trusted_and_expires_on_its_own(
    make_leases: MakeLeases, kube_api: KubeApiEmulator
) -> None:
    labels = {PART_OF_LABEL: "wva", SERVICE_LABEL: "scaler"}
    for name, holder in (("wva-scaler-3", "Not An Identity!" * 10), ("wva-members-scaler-x-1", "someone-else")):
        kube_api.store.create(
            kube_resources.LEASES, {"metadata": {"name": name, "labels": labels}, "spec": {"holderIdentity": holder}},
            namespace=NS,
        )
    rejected = MESSAGES_REJECTED.labels(subject_kind="leases", reason="invalid")._value.get()
    b = await make_leases("b-1")
    await b.round()
    assert b.owned == ALL - {"3"}  # held by nobody known, and not free either
    assert b.members == 1  # a member Lease whose holder is not its own identity does not count
    assert MESSAGES_REJECTED.labels(subject_kind="leases", reason="invalid")._value.get() > rejected
    # nobody renews them: once b has seen them unchanged for a TTL, 3 is free and the member is tidied up
    deadline = time.monotonic() + TTL + 3 * b.period
    while "3" not in b.owned and time.monotonic() < deadline:
        await asyncio.sleep(b.period)
        await b.round()
    assert b.owned == ALL and holders(kube_api)["3"] == "b-1"
    assert kube_api.store.find(kube_resources.LEASES, NS, "wva-members-scaler-x-1") is None


async def test_a_forbidden_lease_api_leaves_the_service_running_unready_and_says_which_rbac(
    nats_server: NatsServer, kube_api: KubeApiEmulator, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))  # the fetcher's way: no kubeconfig setting of its own
    kube_api.faults.fail(403, times=10_000, path="/leases", message='leases.coordination.k8s.io is forbidden')
    settings = Settings(
        nats_url=nats_server.url, http_addr="127.0.0.1:0", lease_backend="kubernetes", lease_ttl=TTL,
        lease_namespace=NS,
    )
    started: list[lifecycle.Runtime] = []

    async def main(runtime: lifecycle.Runtime) -> None:
        started.append(runtime)
        await runtime.run_leases()

    failures = ROUND_FAILURES.labels(service="fetcher")._value.get()
    stop, ready = asyncio.Event(), asyncio.Event()
    caplog.set_level(logging.INFO, logger="wva")
    serving = asyncio.create_task(lifecycle.serve("fetcher", settings, main, stop=stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.sleep(3 * TTL / 3 + 0.2)  # three rounds
        assert not serving.done()
        (runtime,) = started
        assert runtime.leases is not None and not runtime.leases.healthy and not runtime.leases.owned
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{runtime.http_port}/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["checks"]["leases"] is False
        assert ROUND_FAILURES.labels(service="fetcher")._value.get() >= failures + 3
        said = [r.getMessage() for r in caplog.records if "lease round failed" in r.getMessage()]
        assert len(said) == 1, said  # once, not every round
        assert "HTTP 403" in said[0] and "coordination.k8s.io leases get, list, create, update, delete" in said[0]
        assert f"namespace {NS}" in said[0]
        kube_api.faults.clear()  # the RBAC is granted: the next round takes every partition
        deadline = time.monotonic() + 5
        while not runtime.leases.healthy and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert runtime.leases.healthy and runtime.leases.owned == ALL
    finally:
        stop.set()
        assert await asyncio.wait_for(serving, 10) == 0


@pytest.mark.parametrize("kubeconfig", ["", "missing-kubeconfig.yaml"], ids=["not-in-a-pod", "missing-file"])
async def test_without_a_kubernetes_client_configuration_a_service_stops_with_one_clear_line(
    wva_process: StartService, nats_server: NatsServer, tmp_path: Path, kubeconfig: str
) -> None:
    env = {
        "WVA_NATS_URL": nats_server.url, "WVA_LEASE_BACKEND": "kubernetes",
        "KUBECONFIG": str(tmp_path / kubeconfig) if kubeconfig else "",
        "KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": "",
    }  # fmt: skip
    fetcher = await wva_process("fetcher", env, ready=False)
    await eventually(lambda: not fetcher.alive, timeout=15, what="the fetcher stops")
    log = fetcher.log()
    assert fetcher.returncode == 1, log
    assert "WVA_LEASE_BACKEND=kubernetes needs the Kubernetes API" in log and "Traceback" not in log, log
