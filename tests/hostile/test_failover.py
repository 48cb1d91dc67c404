"""Issue #16: several replicas of every service, killed. Real `wva` processes, a real nats-server with
the leases in a KV bucket (TTL 3 s: a renewal every second) — or, for the scaler, in Lease objects of
the emulated Kubernetes API (``WVA_LEASE_BACKEND=kubernetes``) — and the emulated Kubernetes API, which
records every PATCH with the User-Agent of the scaler replica that sent it.

- kill -9 the scaler that owns a group while its load rises: the other applies the next scale-up
  within lease TTL + one reconcile (5 s), no step is applied twice, nothing comes from the dead one;
- SIGSTOP the owner past its TTL, then SIGCONT: the resumed replica acts on nothing (no PATCH, no
  status write: without the fence it writes the stale statuses its backlog produces);
- kill -9 the fetcher that owns a group: its snapshots resume within TTL + one fetch interval, and
  in steady state no VA has two publishers (counted per VA per cycle);
- kill -9 the publishing watcher: the standby publishes the next change within TTL + a round.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client

from services.sandbox.kubeapi import KubeApiEmulator
from services.sandbox.kubeapi import resources as kube_resources
from shared import kubeleases, messages, natsio, partitions, streams
from shared.natsleases import read_bucket
from shared.subjects import Subjects
from tests.fixtures.fetcher import Pods, make_target
from tests.fixtures.servers import NatsServer
from tests.fixtures.services import ServiceProcess, StartService, metric_sum
from tests.hostile.conftest import (
    MODEL,
    NS,
    ClusterObjects,
    Feed,
    eventually,
    fetcher_env,
    saturated_snapshot,
    scaler_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

S = Subjects()
TTL = 3.0
RECONCILE = 1.0
HA = {"WVA_LEASE_BACKEND": "nats", "WVA_LEASE_TTL": f"{TTL:g}s"}
LEASE_NS = "wva-system"
BACKENDS = {"nats": HA, "kubernetes": {**HA, "WVA_LEASE_BACKEND": "kubernetes", "WVA_LEASE_NAMESPACE": LEASE_NS}}
# A replica reading Lease objects starts its clock when it first sees the last renewal (within a
# renewal period of it): a takeover may come one period later than with the bucket's own expiry.
OBSERVING = {"nats": 0.0, "kubernetes": TTL / 3}

Leases = Client | KubeApiEmulator  # where the leases are: the bucket (through NATS) or Lease objects


async def holder(where: Leases, key: str) -> str | None:
    """Who holds ``key`` now (None: nobody, or no bucket yet)."""
    if isinstance(where, KubeApiEmulator):
        obj = where.store.find(kube_resources.LEASES, LEASE_NS, kubeleases.object_name(key))
        return None if obj is None else str(obj["spec"].get("holderIdentity"))
    nc = where
    try:
        js = nc.jetstream()
        entries = await read_bucket(js, await js.key_value("WVA_LEASES"), "WVA_LEASES", keys=key)
    except nats.js.errors.BucketNotFoundError:
        return None
    entry = entries.get(key)
    return None if entry is None else entry.holder


def owner_of(identity: str | None, processes: dict[str, ServiceProcess]) -> ServiceProcess | None:
    return next((p for name, p in processes.items() if identity and identity.startswith(f"{name}-")), None)


# ------------------------------------------------------------------------------------- scaler


class RisingLoad:
    """The watcher and the fetcher for one VA: the Deployment as the API has it, every replica saturated."""

    def __init__(self, kube_api: KubeApiEmulator, nc: Client, target: messages.Target) -> None:
        self.kube_api, self.js, self.base = kube_api, nc.jetstream(), target
        self.task: asyncio.Task[None] | None = None

    def deployment(self) -> tuple[int, int]:
        obj = self.kube_api.store.find(kube_resources.DEPLOYMENTS, NS, self.base.name)
        assert obj is not None
        return int(obj["spec"]["replicas"]), int(obj["metadata"]["generation"])

    async def run(self) -> None:
        while True:
            replicas, generation = self.deployment()
            target = messages.Target(
                **{**{f: getattr(self.base, f) for f in self.base.__struct_fields__},
                   "at": messages.utcnow(), "spec_replicas": replicas, "ready_replicas": replicas,
                   "updated_replicas": replicas, "available_replicas": replicas, "deployment_generation": generation}
            )
            await natsio.publish(self.js, S.targets(NS, target.name), target)
            await natsio.publish(self.js, S.metrics(NS, target.name), saturated_snapshot(target))
            await asyncio.sleep(0.3)

    def __enter__(self) -> RisingLoad:
        self.task = asyncio.create_task(self.run())
        return self

    def __exit__(self, *_: object) -> None:
        assert self.task is not None
        self.task.cancel()


def patches(kube_api: KubeApiEmulator, name: str) -> list[tuple[float, str, int]]:
    """(when, replica identity, replicas set) of every scale PATCH of ``name``."""
    found = []
    for r in kube_api.faults.requests:
        if r.verb == "patch" and r.path.endswith(f"/deployments/{name}/scale"):
            found.append((r.at, r.user_agent.partition("/")[2], int(json.loads(r.body)["spec"]["replicas"])))
    return found


@asynccontextmanager
async def two_scalers(
    wva_process: StartService, nats_server: NatsServer, kubeconfig: Path, backend: str = "nats", **extra: str
) -> AsyncIterator[dict[str, ServiceProcess]]:
    env = scaler_env(nats_server.url, kubeconfig, WVA_SCALE_UP_STEP="one", **BACKENDS[backend], **extra)
    yield {name: await wva_process("scaler", {**env, "HOSTNAME": name}) for name in ("scaler-a", "scaler-b")}


async def settled_owners(
    nc: Leases, keys: list[str], processes: dict[str, ServiceProcess], members: int
) -> dict[str, ServiceProcess]:
    """The process holding each key once the replicas have shared the partitions (nothing moved for a
    TTL with every member in)."""
    deadline = time.monotonic() + 25
    last: dict[str, str | None] = {}
    since = time.monotonic()
    while time.monotonic() < deadline:
        now = {key: await holder(nc, key) for key in keys}
        if now != last or await member_count(nc, keys[0].split(".")[0]) != members:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > TTL:
            found = {key: owner_of(who, processes) for key, who in now.items()}
            if all(found.values()):
                return {key: p for key, p in found.items() if p is not None}
        await asyncio.sleep(0.2)
    raise AssertionError(f"the leases never settled (last holders {last})")


async def settled_owner(nc: Leases, key: str, processes: dict[str, ServiceProcess], members: int) -> ServiceProcess:
    return (await settled_owners(nc, [key], processes, members))[key]


async def member_count(where: Leases, service: str) -> int:
    if isinstance(where, KubeApiEmulator):  # (a killed replica's member Lease stays until tidied up)
        items, _ = where.store.list(kube_resources.LEASES, LEASE_NS, label_selector=f"{kubeleases.SERVICE_LABEL}={service}")
        return sum(o["metadata"]["name"].startswith(f"wva-members-{service}-") for o in items)
    nc = where
    try:
        js = nc.jetstream()
        return len(await read_bucket(js, await js.key_value("WVA_LEASES"), "WVA_LEASES", keys=f"members.{service}.*"))
    except nats.js.errors.BucketNotFoundError:
        return 0


@pytest.mark.parametrize("backend", BACKENDS)
async def test_kill_9_of_the_owning_scaler_under_rising_load(
    nats_server: NatsServer, nats_client: Client, kube_api: KubeApiEmulator, kubeconfig: Path,
    cluster_objects: ClusterObjects, wva_process: StartService, backend: str,
) -> None:
    target = await cluster_objects("a", replicas=1, max_replicas=40)
    key = f"scaler.{partitions.partition_of(NS, MODEL, 16)}"
    leases: Leases = kube_api if backend == "kubernetes" else nats_client
    async with two_scalers(wva_process, nats_server, kubeconfig, backend) as scalers:
        with RisingLoad(kube_api, nats_client, target):
            owner = await settled_owner(leases, key, scalers, members=2)
            settled_at = time.monotonic()
            survivor = next(p for p in scalers.values() if p is not owner)
            await eventually(
                lambda: sum(at > settled_at for at, _, _ in patches(kube_api, "a")) >= 2, timeout=20,
                what="the owner scaling up",
            )
            killed_at = time.monotonic()
            await owner.kill()
            await eventually(
                lambda: any(at > killed_at for at, _, _ in patches(kube_api, "a")), timeout=TTL + RECONCILE + 10,
                what="a scale-up after the kill",
            )
            after = [(at, who, n) for at, who, n in patches(kube_api, "a") if at > killed_at]
            took = after[0][0] - killed_at
            print(f"{backend}: the survivor's first scale-up came {took:.3f}s after the kill")
            bound = TTL + RECONCILE + 1.0 + OBSERVING[backend]
            assert took <= bound, f"the survivor's first scale-up came {took:.2f}s after the kill"
            await asyncio.sleep(1.5)
        every = patches(kube_api, "a")
        # while both ran, only the owner patched; after the kill, only the survivor
        assert {who.rsplit("-", 1)[0] for at, who, _ in every if settled_at < at <= killed_at} == {owner.env["HOSTNAME"]}, every
        assert {who.rsplit("-", 1)[0] for at, who, _ in every if at > killed_at} == {survivor.env["HOSTNAME"]}, every
        counts = [n for _, _, n in every]
        # every step applied once: each PATCH sets a count no PATCH set before, one up from the last
        assert counts == list(range(2, 2 + len(counts))), counts


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_scaler_stopped_past_its_ttl_acts_on_nothing_when_it_resumes(
    nats_server: NatsServer, nats_client: Client, kube_api: KubeApiEmulator, kubeconfig: Path,
    cluster_objects: ClusterObjects, wva_process: StartService, backend: str,
) -> None:
    target = await cluster_objects("a", replicas=1, max_replicas=40)
    leases: Leases = kube_api if backend == "kubernetes" else nats_client
    # One partition: the group stays with whoever holds it, so a resumed replica has nothing to gain back.
    async with two_scalers(wva_process, nats_server, kubeconfig, backend, WVA_PARTITIONS="1") as scalers:
        with RisingLoad(kube_api, nats_client, target):
            owner = await settled_owner(leases, "scaler.0", scalers, members=2)
            await eventually(lambda: len(patches(kube_api, "a")) >= 2, timeout=20, what="the owner scaling up")
            assert owner.proc is not None
            stopped_at = time.monotonic()
            owner.proc.send_signal(signal.SIGSTOP)  # a network partition: it neither renews nor acts
            try:
                await eventually(
                    lambda: any(at > stopped_at + TTL for at, _, _ in patches(kube_api, "a")), timeout=TTL + 10,
                    what="the other replica scaling after the TTL",
                )
                await asyncio.sleep(1.0)
            finally:
                owner.proc.send_signal(signal.SIGCONT)
            resumed_at = time.monotonic()
            await asyncio.sleep(TTL)  # it catches up on what it missed: targets, snapshots, ticks
        mine = [at for at, who, _ in patches(kube_api, "a") if owner_of(who, scalers) is owner]
        assert mine and max(mine) < stopped_at, f"the resumed replica patched: {patches(kube_api, 'a')}"
        writes = [r for r in kube_api.faults.requests
                  if r.at > resumed_at and r.method == "PATCH" and owner_of(r.user_agent.partition("/")[2], scalers) is owner]
        assert writes == [], writes  # no status write either (without the fence: stale statuses, written over)
        assert owner.alive
        lost = metric_sum(await owner.metrics(), "wva_lease_changes_total", change="lost")
        assert lost >= 1, "the resumed replica never noticed its lease was gone"


class HolderLog:
    """Every change of holder of the ``<service>.*`` lease keys, with when it happened (a KV watch)."""

    def __init__(self) -> None:
        self.holder: dict[str, str | None] = {}
        self.changes: list[tuple[float, str, str | None]] = []  # (when, partition, new holder or None)
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, nc: Client, service: str) -> HolderLog:
        kv = await nc.jetstream().key_value("WVA_LEASES")
        self._watcher = await kv.watch(f"{service}.*")

        async def run() -> None:
            async for entry in self._watcher:
                if entry is None:
                    continue
                partition = entry.key.split(".", 1)[1]
                new = entry.value.decode() if entry.operation is None else None
                if self.holder.get(partition, "?") != new:
                    if partition in self.holder:
                        self.changes.append((time.monotonic(), partition, new))
                    self.holder[partition] = new

        self._task = asyncio.create_task(run())
        await asyncio.sleep(0.2)
        return self

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._watcher.stop()

    def gaps(self) -> list[float]:
        """For every partition given back, how long it stayed without a holder."""
        found, freed = [], {}
        for at, partition, new in self.changes:
            if new is None:
                freed[partition] = at
            elif partition in freed:
                found.append(at - freed.pop(partition))
        assert not freed, f"partitions left without a holder: {sorted(freed)}"
        return found


async def test_a_third_scaler_joins_and_one_leaves_without_ping_pong(
    nats_server: NatsServer, nats_client: Client, kubeconfig: Path, wva_process: StartService,
) -> None:
    env = scaler_env(nats_server.url, kubeconfig, **HA)
    scalers = {name: await wva_process("scaler", {**env, "HOSTNAME": name}) for name in ("scaler-a", "scaler-b")}
    keys = [f"scaler.{p}" for p in range(16)]
    await settled_owners(nats_client, keys, scalers, members=2)
    log = await HolderLog().start(nats_client, "scaler")
    try:
        scalers["scaler-c"] = await wva_process("scaler", {**env, "HOSTNAME": "scaler-c"})
        held = await settled_owners(nats_client, keys, scalers, members=3)
        shares = sorted(sum(p is s for p in held.values()) for s in scalers.values())
        assert shares == [4, 6, 6], shares
        # four partitions moved, each once: given back by a or b, taken by c; nothing else changed
        moved = [p for _, p, new in log.changes if new is not None]
        assert len(log.changes) == 8 and len(set(moved)) == 4, log.changes
        assert all(new is None or new.startswith("scaler-c-") for _, _, new in log.changes), log.changes
        assert max(log.gaps()) <= TTL, log.gaps()
        log.changes.clear()
        leaving = scalers.pop("scaler-b")
        theirs = sum(p is leaving for p in held.values())
        await leaving.stop()  # SIGTERM: a rolling update's way out, leases given back
        held = await settled_owners(nats_client, keys, scalers, members=2)
        assert sorted(sum(p is s for p in held.values()) for s in scalers.values()) == [8, 8]
        assert len(log.changes) == 2 * theirs, log.changes  # each of its partitions freed once, taken once
        assert max(log.gaps()) <= TTL, log.gaps()
    finally:
        await log.stop()


# ------------------------------------------------------------------------------------- fetcher


async def test_kill_9_of_the_owning_fetcher(
    nats_server: NatsServer, nats_client: Client, vllm_pods: Pods, wva_process: StartService,
) -> None:
    pod = await vllm_pods.start(NS, "llama-0")
    targets = [make_target(NS, f"va-{i}", [pod], model_id=f"model-{i % 4}") for i in range(8)]
    js = nats_client.jetstream()
    await streams.ensure(js, S, streams.StreamSpec())
    for t in targets:
        await natsio.publish(js, S.targets(t.namespace, t.name), t)
    interval = 1.0
    env = fetcher_env(nats_server.url, WVA_COLLECTOR="scrape", WVA_FETCH_INTERVAL=f"{interval:g}s", **HA)
    fetchers = {name: await wva_process("fetcher", {**env, "HOSTNAME": name}) for name in ("fetcher-a", "fetcher-b")}
    feed = await Feed().attach(nats_client, S.wildcard(messages.subjects.SubjectKind.METRICS))
    arrivals: dict[str, list[float]] = {}

    async def on(msg: Any) -> None:
        arrivals.setdefault(msg.subject.rsplit(".", 1)[1], []).append(time.monotonic())

    await nats_client.subscribe(S.wildcard(messages.subjects.SubjectKind.METRICS), cb=on)
    # wait until every partition has its holder and nothing moves for a TTL
    keys = {t.name: f"fetcher.{partitions.partition_of(NS, t.model_id, 16)}" for t in targets}
    held = await settled_owners(nats_client, sorted(set(keys.values())), fetchers, members=2)
    owners = {name: held[key] for name, key in keys.items()}
    # steady state: one publisher per VA, at most one snapshot per cycle
    arrivals.clear()
    window = 4.0
    await asyncio.sleep(window)
    counts = {name: len(arrivals.get(name, [])) for name in keys}
    assert all(1 <= n <= window / interval + 1 for n in counts.values()), counts
    by_name = {p.env["HOSTNAME"] for p in owners.values()}
    victim = owners[targets[0].name]
    orphaned = [name for name, p in owners.items() if p is victim]
    killed_at = time.monotonic()
    await victim.kill()
    await eventually(
        lambda: all(any(at > killed_at + 0.01 for at in arrivals.get(name, [])) for name in orphaned),
        timeout=TTL + interval + 10, what="snapshots of the dead fetcher's VAs again",
    )
    resumed = max(min(at for at in arrivals[name] if at > killed_at) for name in orphaned) - killed_at
    assert resumed <= TTL + interval + 1.0, f"snapshots resumed {resumed:.2f}s after the kill"
    assert feed.messages
    assert by_name  # (with 4 groups on 16 partitions both fetchers usually own some; either way one is killed)


# ------------------------------------------------------------------------------------- watcher


async def test_kill_9_of_the_publishing_watcher(
    nats_server: NatsServer, nats_client: Client, kube_api: KubeApiEmulator, kubeconfig: Path,
    cluster_objects: ClusterObjects, wva_process: StartService,
) -> None:
    await cluster_objects("a", replicas=1)
    env = {"WVA_NATS_URL": nats_server.url, "KUBECONFIG": str(kubeconfig), "WVA_STREAM_CHECK_INTERVAL": "1s", **HA}
    watchers = {name: await wva_process("watcher", {**env, "HOSTNAME": name}) for name in ("watcher-a", "watcher-b")}
    publisher = await settled_owner(nats_client, "watcher.watcher", watchers, members=2)
    feed = await Feed().attach(nats_client, S.wildcard(messages.subjects.SubjectKind.TARGETS))
    killed_at = time.monotonic()
    await publisher.kill()
    kube_api.store.patch(kube_resources.DEPLOYMENTS, NS, "a", {"spec": {"replicas": 3}})

    def published() -> bool:
        return any(t.spec_replicas == 3 for t in feed.of(messages.Target, "a"))

    await eventually(published, timeout=TTL + 10, what="the standby publishing the change")
    took = time.monotonic() - killed_at
    assert took <= TTL + 1.0 + 1.0, f"the change was published {took:.2f}s after the kill"
