"""tail, top and record against a real nats-server with the real streams."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.client import Client

from services.tools import record, tail, top
from shared import messages as m
from shared import natsio, streams
from shared.settings import Settings
from shared.subjects import Subjects
from tests.fixtures.servers import NatsServer

S = Subjects()
AT = datetime(2026, 1, 1, tzinfo=UTC)


async def _seed(nc: Client) -> None:
    js = nc.jetstream()
    await streams.ensure(js, S, streams.StreamSpec())
    for replicas in (1, 2):
        await natsio.publish(
            js, S.targets("llm", "a"), m.Target(namespace="llm", name="a", at=AT, model_id="mx", spec_replicas=replicas)
        )
    await natsio.publish(
        js,
        S.metrics("llm", "a"),
        m.MetricsSnapshot(
            namespace="llm", name="a", at=AT, collected_at=AT, replicas=(m.ReplicaMetrics(pod="p", kv_cache_usage=0.5),)
        ),
    )
    await natsio.publish(js, S.invalidate("llm", "a"), m.Invalidation(namespace="llm", name="a", at=AT, reason="relist"))
    await natsio.publish(
        js, S.decisions("llm", "a"), m.Decision(namespace="llm", name="a", at=AT, current=2, desired=3, reason="scale_up")
    )
    await nc.publish(S.metrics("llm", "b"), b"not json")  # kept by the stream, must not break the tools


async def test_tail_last_shows_last_values_then_live(nats_server: NatsServer, nats_client: Client) -> None:
    await _seed(nats_client)
    out = io.StringIO()
    settings = Settings(nats_url=nats_server.url)
    task = asyncio.create_task(tail.tail(settings, None, raw=False, last=True, count=6, out=out))
    for _ in range(100):
        if out.getvalue().count("\n") >= 5:
            break
        await asyncio.sleep(0.05)
    await nats_client.publish(S.fetch("llm", "a"), m.encode(m.FetchRequest(namespace="llm", name="a", at=AT)))
    await natsio.publish(
        nats_client.jetstream(),
        S.targets("llm", "a"),
        m.Target(namespace="llm", name="a", at=AT, model_id="mx", spec_replicas=9),
    )
    assert await asyncio.wait_for(task, 10) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    targets = [line for line in lines if "target.v1" in line]
    assert "ready/spec=0/2" in targets[0]  # only the last stored value, not replicas=1
    assert "ready/spec=0/9" in targets[-1]  # then live
    assert any("! malformed" in line for line in lines)
    assert any("decision.v1 2->3" in line for line in lines)


async def test_record_writes_replayable_jsonl(nats_server: NatsServer, nats_client: Client, tmp_path: Path) -> None:
    await _seed(nats_client)
    out = tmp_path / "rec.jsonl"
    settings = Settings(nats_url=nats_server.url)
    assert await record.record(settings, out, since=3600, follow=False, duration=0) == 0
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [e["event"]["kind"] for e in entries]
    assert sorted(kinds) == ["decision.v1", "invalidation.v1", "metrics.v1", "target.v1"]  # garbage skipped
    assert [e["t"] for e in entries] == sorted(e["t"] for e in entries)
    for entry in entries:
        m.any_decoder.decode(json.dumps(entry["event"]).encode())


async def test_top_once_renders_every_va(nats_server: NatsServer, nats_client: Client) -> None:
    await _seed(nats_client)
    out = io.StringIO()
    assert await top.top(Settings(nats_url=nats_server.url), once=True, out=out, width=200) == 0
    text = out.getvalue()
    row = next(line for line in text.splitlines() if " a " in line)
    assert "llm" in row and "mx" in row and "0.50" in row and "2->3" in row and "scale_up" in row


def test_top_shows_snapshot_age_and_skips_garbage() -> None:
    state = top.TopState()
    snapshot = m.MetricsSnapshot(
        namespace="llm", name="a", at=AT, collected_at=AT, replicas=(m.ReplicaMetrics(pod="p", kv_cache_usage=0.5),)
    )
    state.apply(m.encode(snapshot))
    state.apply(b"{}")  # counted and ignored
    assert "12s" in top.render_text(state, now=AT.timestamp() + 12)


async def test_tail_leases_and_top_show_who_holds_what(nats_server: NatsServer, nats_client: Client) -> None:
    from shared import partitions
    from shared.leases import Leases
    from shared.natsleases import NatsLeaseStore

    await _seed(nats_client)
    a = Leases(NatsLeaseStore(nats_client, bucket="WVA_LEASES", ttl=15.0), service="scaler",
               identity="scaler-a-1f2e3d", partitions=partitions.numbered(16), ttl=15.0)
    await a.round()
    out = io.StringIO()
    settings = Settings(nats_url=nats_server.url)
    follower = asyncio.create_task(tail.tail_leases(settings, count=19, out=out))  # 17 keys, then 2 changes
    for _ in range(100):
        if out.getvalue().count("\n") >= 17:
            break
        await asyncio.sleep(0.05)
    await a.round()  # renewals: not shown
    await a.release()  # given back: shown
    assert await asyncio.wait_for(follower, 10) == 0
    lines = out.getvalue().splitlines()
    assert any(line.startswith("lease scaler.0 = scaler-a-1f2e3d") for line in lines[:17]), lines
    assert sum(" given back " in line for line in lines) == 2, lines
    await a.round()  # holds every partition again
    text = io.StringIO()
    assert await top.top(settings, once=True, out=text, width=240) == 0
    table = text.getvalue()
    assert "owner" in table and "scaler-a-1f2e3d" in table
    assert any(line.split()[:3] == ["scaler", "scaler-a-1f2e3d", "16"] for line in table.splitlines()), table
