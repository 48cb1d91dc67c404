"""Issue #12 items 1-2: poison messages on every subject the fetcher reads, against `wva fetcher` as a
process — it must count them, log them at a bounded rate, keep serving, and come back up while the
poison is still the last value of its subject (the crash-loop the issue saw)."""

from __future__ import annotations

import json

from aiohttp import web
from nats.aio.client import Client

from shared import messages, streams
from shared.subjects import Subjects
from tests.fixtures.http import HostileHttp
from tests.fixtures.servers import NatsServer
from tests.fixtures.services import StartService
from tests.hostile.conftest import NS, Feed, eventually, fetcher_env, publish_raw, rejected

S = Subjects()

GOOD_METRICS = """\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.5
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 1.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 4.0
"""


def deep(kind: str, name: str, depth: int = 1200) -> bytes:
    """~2.4 KB nested 1,200 levels deep, in a field nobody reads (the issue's RecursionError)."""
    head = json.dumps({"kind": kind, "namespace": NS, "name": name, "at": "2026-01-02T03:04:05Z"})[:-1]
    return head.encode() + b',"x":' + b"[" * depth + b"]" * depth + b"}"


def target(name: str, **fields: object) -> messages.Target:
    return messages.Target(namespace=NS, name=name, at=messages.utcnow(), model_id="m", **fields)  # type: ignore[arg-type]


async def test_poison_on_every_subject_is_counted_and_survives_a_restart(
    nats_server: NatsServer, nats_client: Client, hostile_http: HostileHttp, wva_process: StartService
) -> None:
    async def good_pod(_: web.Request) -> web.Response:
        return web.Response(text=GOOD_METRICS)

    pod = await hostile_http(good_pod)
    js = nats_client.jetstream()
    await streams.ensure(js, S, streams.StreamSpec())
    good = target("good", pods=(messages.PodRef(name="good-0", ready=True, address=pod),))
    await js.publish(S.targets(NS, "good"), messages.encode(good))
    snapshots = await Feed().attach(nats_client, "wva.metrics.>")
    fetcher = await wva_process("fetcher", fetcher_env(nats_server.url, WVA_COLLECTOR="scrape"))
    await eventually(lambda: bool(snapshots.of(messages.MetricsSnapshot, "good")), timeout=10, what="a snapshot")

    # Item 1: nested ~1,200 deep on each subject the fetcher reads; the targets one stays the last value.
    await js.publish(S.targets(NS, "poison"), deep("target.v1", "poison"))
    await js.publish(S.invalidate(NS, "good"), deep("invalidation.v1", "good"))
    reply = await nats_client.request(S.fetch(NS, "good"), deep("fetch.v1", "good"), timeout=5)
    answer = messages.metrics_decoder.decode(reply.data)
    assert isinstance(answer, messages.MetricsSnapshot) and answer.status == "unavailable"
    assert answer.reason == "malformed fetch request (rejected)"
    # Item 2: decodable, but not a Kubernetes name; or speaking for another VA than its subject.
    await publish_raw(
        nats_client, S.targets(NS, "bad-name"),
        json.dumps({"kind": "target.v1", "namespace": NS, "name": "Bad_Name", "at": "2026-01-02T03:04:05Z"}).encode(),
    )
    await js.publish(S.targets(NS, "victim"), messages.encode(target("other")))
    # And a flood: one warning per subject kind per minute, not one line per message.
    for i in range(200):
        await publish_raw(nats_client, S.targets(NS, f"flood-{i}"), b"\x00 not json")
    await nats_client.flush()

    async def counted() -> bool:
        return (
            await rejected(fetcher, subject_kind="targets", reason="too_deep") >= 1
            and await rejected(fetcher, subject_kind="invalidate", reason="too_deep") >= 1
            and await rejected(fetcher, subject_kind="fetch", reason="too_deep") >= 1
            and await rejected(fetcher, subject_kind="targets", reason="invalid_name") >= 1
            and await rejected(fetcher, subject_kind="targets", reason="subject_mismatch") >= 1
            and await rejected(fetcher, subject_kind="targets", reason="malformed") >= 200
        )

    await eventually(counted, timeout=10, what=f"rejections counted on /metrics\n{fetcher.tail()}")
    assert fetcher.alive
    warnings = [line for line in fetcher.log().splitlines() if "rejected a message" in line]
    assert 1 <= len(warnings) <= 3, warnings  # targets, invalidate, fetch: at most one each
    # Still serving: the good VA is answered, the forged one for "other" was never tracked.
    ok = messages.metrics_decoder.decode((await nats_client.request(S.fetch(NS, "good"), b"", timeout=5)).data)
    assert isinstance(ok, messages.MetricsSnapshot) and ok.status != "unavailable", ok
    forged = messages.metrics_decoder.decode((await nats_client.request(S.fetch(NS, "other"), b"", timeout=5)).data)
    assert isinstance(forged, messages.MetricsSnapshot) and "not tracked" in forged.reason

    # A restart replays the poison (still the last value of its subject): counted again, and ready.
    await fetcher.restart()
    await fetcher.wait_ready()
    assert await rejected(fetcher, subject_kind="targets", reason="too_deep") >= 1
    before = len(snapshots.of(messages.MetricsSnapshot, "good"))
    await eventually(
        lambda: len(snapshots.of(messages.MetricsSnapshot, "good")) > before, timeout=10, what="snapshots resume"
    )
    assert fetcher.alive
