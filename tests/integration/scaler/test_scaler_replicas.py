"""Two scaler replicas in-process, with leases in a real nats-server's KV bucket and the emulated
Kubernetes API (docs/design.md §11): each decides only its groups, a clean leave hands a group over
at once, and a recording of the run replays to every decision of each replica."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from nats.aio.msg import Msg

from services.scaler import recording, replay, service
from services.scaler.replay_command import differences
from services.tools.record import record
from shared import lifecycle, messages
from shared.partitions import partition_of
from shared.settings import Settings
from shared.subjects import SubjectKind
from tests.fixtures.scaler import NS, S, eq, eventually, first

M0, M1 = "model-4", "model-0"  # partitions 0 and 1 of 2
HA = {"partitions": 2, "lease_ttl": 1.5}  # and lease_backend: each test runs with both


class Replica:
    def __init__(self, settings: Any) -> None:
        self.stop, self.ready = asyncio.Event(), asyncio.Event()
        self.task = asyncio.create_task(lifecycle.serve("scaler", settings, service.main, stop=self.stop, ready=self.ready))

    async def close(self) -> None:
        self.stop.set()
        assert await asyncio.wait_for(self.task, 10) == 0


@pytest.mark.parametrize("backend", ["nats", "kubernetes"])
async def test_two_scalers_decide_their_own_groups_hand_over_and_replay(
    scaler_setup: Any, tmp_path: Path, backend: str
) -> None:
    assert partition_of(NS, M0, 2) == 0 and partition_of(NS, M1, 2) == 1
    cluster, settings = scaler_setup
    await cluster.add_variant("v0", replicas=1, cost="10", model=M0)
    await cluster.add_variant("v1", replicas=1, cost="10", model=M1)
    decisions: list[messages.Decision] = []

    async def on_decision(msg: Msg) -> None:
        decision = messages.events_decoder.decode(msg.data)
        assert isinstance(decision, messages.Decision)
        decisions.append(decision)

    sub = await cluster.nc.subscribe(S.wildcard(SubjectKind.DECISIONS), cb=on_decision)
    out = tmp_path / "run.jsonl"  # recorded as `wva record --follow` does, all along
    recorder = asyncio.create_task(
        record(Settings(nats_url=cluster.nc.connected_url.geturl()), out, since=3600, follow=True, duration=0)
    )
    await asyncio.sleep(0.5)
    t0, t1 = await cluster.target("v0", cost=10, model=M0), await cluster.target("v1", cost=10, model=M1)
    await cluster.snapshot(t0, [0.5])
    await cluster.snapshot(t1, [0.5])
    a = Replica(settings(**HA, lease_backend=backend))
    await asyncio.wait_for(a.ready.wait(), 10)
    b = Replica(settings(**HA, lease_backend=backend))
    try:
        # a takes both groups first; b joins, a gives one partition back, b takes it over
        first_one = await eventually(lambda: first(decisions, lambda d: True))
        if backend == "kubernetes":  # the leases are Lease objects in the API, one per partition
            leases = await client.CoordinationV1Api(cluster.core.api_client).list_namespaced_lease("wva-system")
            assert {"wva-scaler-0", "wva-scaler-1"} <= {lease.metadata.name for lease in leases.items}
        a_id = first_one.replica
        other = await eventually(lambda: first(decisions, lambda d: d.replica != a_id), timeout=15)
        b_id = other.replica
        assert a_id and b_id and all(d.replica in (a_id, b_id) for d in decisions)
        latest = {d.name: d.replica for d in decisions}
        assert sorted(latest.values()) == sorted((a_id, b_id)), latest
        # load rises on both groups: each owner scales its own
        await cluster.snapshot(t0, [0.95])
        await cluster.snapshot(t1, [0.95])
        assert await eventually(lambda: eq(cluster.replicas("v0"), 2), timeout=15)
        assert await eventually(lambda: eq(cluster.replicas("v1"), 2), timeout=15)
        for name in ("v0", "v1"):
            applied = [d for d in decisions if d.name == name and d.applied and d.outcome == "applied"]
            assert [d.replica for d in applied] == [latest[name]], applied
        # the watcher's part: the Deployments changed
        t0, t1 = await cluster.target("v0", cost=10, model=M0), await cluster.target("v1", cost=10, model=M1)
        await asyncio.sleep(0.3)
        # a leaves cleanly: b takes a's group at its next round
        taken = next(name for name, replica in latest.items() if replica == a_id)
        n = len(decisions)
        await a.close()
        await eventually(lambda: first(decisions[n:], lambda d: d.name == taken and d.replica == b_id), timeout=10)
        t0, t1 = await cluster.target("v0", cost=10, model=M0), await cluster.target("v1", cost=10, model=M1)
        await cluster.snapshot(t0, [0.95, 0.95])
        await cluster.snapshot(t1, [0.95, 0.95])
        assert await eventually(lambda: eq(cluster.replicas("v0"), 3), timeout=15)
        assert await eventually(lambda: eq(cluster.replicas("v1"), 3), timeout=15)
        for name in ("v0", "v1"):  # the steps' decisions are published once their PATCH returned
            assert await eventually(
                lambda name=name: first(decisions[n:], lambda d: d.name == name and d.desired == 3 and d.outcome == "applied"),
                timeout=10,
            )
        assert {d.replica for d in decisions[n:]} == {b_id}
    finally:
        if not a.task.done():
            await a.close()
        await b.close()
        await sub.unsubscribe()
        await asyncio.sleep(0.5)
        recorder.cancel()
        assert await recorder == 0
    # the whole run replays, replica by replica, to every decision each recorded
    lines = out.read_text().splitlines()
    runs = recording.runs(recording.read(lines), None)
    assert sorted(r.replica for r in runs) == sorted({d.replica for d in decisions})
    for run in runs:
        produced = replay.run(run.steps, mode="scale", replica=run.replica)
        assert differences(produced, run.expectations) == [], (run.replica, lines)
