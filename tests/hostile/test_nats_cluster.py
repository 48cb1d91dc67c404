"""Issue #16: a 3-node NATS cluster (routes on 127.0.0.1, R3 streams and lease bucket) under two scaler
replicas, one node killed with kill -9 mid-run, then brought back with its store wiped.

What must hold: no acknowledged message is lost on the last-value streams (the last value of every
subject is the last one a publisher had acknowledged), nothing is scaled while the load does not ask
for it, the services reconnect (ready again, and a scale-up the load then asks for is applied), and
the wiped node catches up on every stream and the lease bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from services.sandbox.kubeapi import KubeApiEmulator
from services.sandbox.kubeapi import resources as kube_resources
from services.sandbox.servers import NatsCluster
from shared import messages, natsio, streams
from shared.subjects import Subjects
from tests.fixtures.binaries import require_binary
from tests.fixtures.services import StartService
from tests.hostile.conftest import NS, ClusterObjects, eventually, scaler_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

S = Subjects()
PROBES = 20


@pytest.fixture
def nats_cluster(tmp_path: Path) -> NatsCluster:
    cluster = NatsCluster(require_binary("nats-server", "make setup"), tmp_path / "nats")
    cluster.start()
    try:
        yield cluster  # type: ignore[misc]
    finally:
        cluster.stop()


def target(base: messages.Target, *, replicas: int, generation: int, kv: float | None = None) -> messages.Target:
    fields = {f: getattr(base, f) for f in base.__struct_fields__}
    fields.update(at=messages.utcnow(), spec_replicas=replicas, ready_replicas=replicas, deployment_generation=generation)
    return messages.Target(**fields)


def snapshot(t: messages.Target, kv: float) -> messages.MetricsSnapshot:
    now = messages.utcnow()
    return messages.MetricsSnapshot(
        namespace=t.namespace, name=t.name, at=now, model_id=t.model_id, collected_at=now,
        deployment_generation=t.deployment_generation,
        allocation=messages.AllocationMetrics(arrival_rate=5.0),
        replicas=tuple(messages.ReplicaMetrics(pod=f"{t.name}-{i}", kv_cache_usage=kv, waiting=0, running=4)
                       for i in range(t.spec_replicas)),
    )


async def stream_replicas_current(nc: Client, name: str) -> bool:
    try:
        info = await nc.jetstream().stream_info(name)
    except nats.errors.Error:
        return False
    cluster = info.cluster
    return cluster is not None and cluster.leader is not None and len(cluster.replicas or []) == 2 and all(
        bool(r.current) and not r.offline for r in cluster.replicas or []
    )


async def test_a_nats_node_killed_then_wiped_loses_nothing_and_scales_nothing_wrongly(
    nats_cluster: NatsCluster, kube_api: KubeApiEmulator, kubeconfig: Path, cluster_objects: ClusterObjects,
    wva_process: StartService,
) -> None:
    base = await cluster_objects("a", replicas=2, max_replicas=10)
    nc = await nats.connect(nats_cluster.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream(timeout=3.0)
    await streams.ensure(js, S, streams.StreamSpec(replicas=3))
    env = scaler_env(
        nats_cluster.url, kubeconfig, WVA_STREAM_REPLICAS="3", WVA_LEASE_BACKEND="nats", WVA_LEASE_TTL="3s",
        WVA_SCALE_UP_STEP="one",
    )
    scalers = [await wva_process("scaler", {**env, "HOSTNAME": f"scaler-{n}"}) for n in "ab"]
    acked: dict[str, int] = {}  # probe VA -> last generation JetStream acknowledged
    sent: dict[str, int] = {}  # probe VA -> last generation sent (acknowledged or not)
    load = {"kv": 0.5}
    probe_base = messages.Target(namespace="probe", name="p", at=messages.utcnow(), model_id="probe")

    stop = asyncio.Event()  # a flag, not cancel(): Python 3.11's wait_for can swallow a cancellation

    async def publish_forever() -> None:
        generation = 0
        while not stop.is_set():
            generation += 1
            replicas = int(kube_api.store.find(kube_resources.DEPLOYMENTS, NS, "a")["spec"]["replicas"])  # type: ignore[index]
            gen = int(kube_api.store.find(kube_resources.DEPLOYMENTS, NS, "a")["metadata"]["generation"])  # type: ignore[index]
            a = target(base, replicas=replicas, generation=gen)
            for publish in (
                natsio.publish(js, S.targets(NS, "a"), a, attempts=10, timeout=3.0),
                natsio.publish(js, S.metrics(NS, "a"), snapshot(a, load["kv"]), attempts=10, timeout=3.0),
            ):
                with contextlib.suppress(nats.errors.Error):  # not acknowledged: not counted
                    await publish
            for i in range(PROBES):
                probe = target(probe_base, replicas=1, generation=generation)
                probe = messages.Target(**{**{f: getattr(probe, f) for f in probe.__struct_fields__}, "name": f"p-{i}"})
                sent[f"p-{i}"] = generation
                try:
                    await natsio.publish(js, S.targets("probe", f"p-{i}"), probe, attempts=10, timeout=3.0)
                    acked[f"p-{i}"] = generation
                except nats.errors.Error:
                    pass
            await asyncio.sleep(0.2)

    def patches() -> list[int]:
        return [int(json.loads(r.body)["spec"]["replicas"]) for r in kube_api.faults.requests
                if r.verb == "patch" and r.path.endswith("/deployments/a/scale")]

    publisher = asyncio.create_task(publish_forever())
    try:
        await asyncio.sleep(3.0)
        assert patches() == []
        killed = nats_cluster.nodes[1]
        killed.kill()  # kill -9 one node mid-run
        await asyncio.sleep(6.0)  # two lease TTLs: leases, streams and consumers move to the other nodes
        assert patches() == [], "something was scaled while the load did not ask for it"
        for scaler in scalers:
            await scaler.wait_for(scaler.ready, timeout=20, what="ready again after losing a NATS node")
        load["kv"] = 0.95  # now the load asks for a scale-up: the pipeline must still act
        await eventually(lambda: patches()[:1] == [3], timeout=20, what="a scale-up after the node loss")
        # the node comes back with an empty store (a lost volume): every stream catches it up
        killed.restart(empty_store=True)
        names = [S.stream_name(x) for x in (streams.TARGETS, streams.METRICS, streams.EVENTS)] + ["KV_WVA_LEASES"]
        for name in names:
            await eventually(lambda name=name: stream_replicas_current(nc, name), timeout=30, what=f"{name} current on 3 nodes")
        stop.set()
        await asyncio.wait_for(publisher, 30)
        # no acknowledged probe target was lost: the last value of each subject is the last one
        # acknowledged, or one sent after it (its ack cut short when the publisher stopped)
        assert len(acked) == PROBES
        for name, generation in acked.items():
            msg = await js.get_last_msg(S.stream_name(streams.TARGETS), S.targets("probe", name))
            assert msg.data is not None
            stored = messages.targets_decoder.decode(msg.data)
            assert isinstance(stored, messages.Target), name
            assert generation <= stored.deployment_generation <= sent[name], (name, generation, stored.deployment_generation)
    finally:
        stop.set()
        await asyncio.wait({publisher}, timeout=30)
        publisher.cancel()
        await nc.close()
    assert all(s.alive for s in scalers)
    counts = patches()
    assert counts == sorted(set(counts)), counts  # no step applied twice
