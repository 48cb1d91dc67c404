"""Issue #12, "Done when": a seeded fuzz run of 10,000+ hostile payloads over every subject a service
reads, against the real `wva fetcher` and `wva scaler` processes. Afterwards each is still up, still
does its job on a normal input, and its ``wva_messages_rejected_total`` accounts for every payload.

The scaler's half passes once its shell reads messages through ``shared.intake`` (the scaler shell
is being rewritten; until then it does not count payloads that decode but speak for another VA than
their subject, nor decisions on the invalidation subject).
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import pytest
from aiohttp import web
from nats.aio.client import Client

from shared import intake, messages, streams
from shared.messages import MessageError
from shared.subjects import SubjectKind, Subjects
from tests.fixtures.http import HostileHttp
from tests.fixtures.servers import NatsServer
from tests.fixtures.services import ServiceProcess, StartService
from tests.hostile.conftest import (
    ClusterObjects,
    Feed,
    eventually,
    fetcher_env,
    publish_raw,
    rejected,
    saturated_snapshot,
    scaler_env,
)
from tests.hostile.payloads import CATEGORIES, Payload, generate

S = Subjects()
SEED = 20261130
COUNT = 10_000
DECODERS: dict[SubjectKind, messages.Decoder[messages.AnyMessage]] = {
    SubjectKind.TARGETS: messages.targets_decoder,  # type: ignore[dict-item]
    SubjectKind.METRICS: messages.metrics_decoder,  # type: ignore[dict-item]
    SubjectKind.INVALIDATE: messages.events_decoder,  # type: ignore[dict-item]
    SubjectKind.FETCH: messages.fetch_decoder,  # type: ignore[dict-item]
}
pytestmark = pytest.mark.timeout(120)
FETCHER_READS = [SubjectKind.TARGETS, SubjectKind.INVALIDATE, SubjectKind.FETCH]
SCALER_READS = [SubjectKind.TARGETS, SubjectKind.METRICS, SubjectKind.INVALIDATE]


def _kind(payload: Payload) -> SubjectKind:
    return SubjectKind(payload.subject.split(".")[1])


@pytest.mark.parametrize("reads", [FETCHER_READS, SCALER_READS], ids=["fetcher", "scaler"])
def test_every_generated_payload_is_one_the_rule_rejects(reads: list[SubjectKind]) -> None:
    """The premise of the runs below, checked in-process: nothing generated may be accepted."""
    payloads = generate(SEED, COUNT, reads)
    reasons: collections.Counter[str] = collections.Counter()
    for p in payloads:
        with pytest.raises(MessageError) as err:
            intake.check(S, p.subject, p.data, decoder=DECODERS[_kind(p)])
        reasons[err.value.reason] += 1
    assert {p.category for p in payloads} == set(CATEGORIES)
    assert {_kind(p) for p in payloads} == set(reads)
    # Every way of being wrong shows up, each with its own reason.
    assert set(reasons) >= {
        "too_large", "too_deep", "malformed", "unknown_kind", "invalid_name", "invalid", "invalid_subject",
        "subject_mismatch",
    }, reasons


async def _flood(nc: Client, payloads: list[Payload]) -> None:
    for p in payloads:
        await publish_raw(nc, p.subject, p.data)
    await nc.flush(timeout=60)


async def _accounts_for(process: ServiceProcess, before: float, expected: int, started: float) -> None:
    """Every payload counted once: wait until the count reaches ``expected`` or stops moving for 10 s
    (on a busy machine a service can fall seconds behind the flood)."""
    seen, still = -1.0, 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and still < 10:
        counted = await rejected(process) - before
        if counted >= expected:
            break
        still = still + 1 if counted == seen else 0
        seen = counted
        await asyncio.sleep(1.0)
    assert process.alive, process.tail()
    counted = await rejected(process) - before
    assert counted == expected, f"{process.name} counted {counted:g} rejections of {expected} payloads"
    warnings = [line for line in process.log().splitlines() if "rejected a message" in line]
    minutes = 1 + (time.monotonic() - started) // 60
    assert len(warnings) <= 4 * minutes, len(warnings)  # once per subject kind per minute, not per payload


async def test_fuzz_the_fetcher(
    big_nats: NatsServer, nats_client_big: Client, hostile_http: HostileHttp, wva_process: StartService
) -> None:
    nats_url = big_nats.url
    payloads = generate(SEED, COUNT, FETCHER_READS)
    await streams.ensure(nats_client_big.jetstream(), S, streams.StreamSpec())
    fetcher = await wva_process("fetcher", fetcher_env(nats_url, WVA_COLLECTOR="scrape"))
    before = await rejected(fetcher)
    started = time.monotonic()
    await _flood(nats_client_big, payloads)
    await _accounts_for(fetcher, before, len(payloads), started)

    # Still does its job: a normal target is tracked, collected and published.
    async def pod(_: web.Request) -> web.Response:
        return web.Response(text="# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc 0.25\n")

    address = await hostile_http(pod)
    feed = await Feed().attach(nats_client_big, "wva.metrics.>")
    target = messages.Target(
        namespace="llm", name="normal", at=messages.utcnow(), model_id="m",
        pods=(messages.PodRef(name="normal-0", ready=True, address=address),),
    )
    await nats_client_big.jetstream().publish(S.targets("llm", "normal"), messages.encode(target))
    await eventually(lambda: bool(feed.of(messages.MetricsSnapshot, "normal")), timeout=10, what="a snapshot")
    snapshot = feed.of(messages.MetricsSnapshot, "normal")[-1]
    assert snapshot.replicas[0].kv_cache_usage == 0.25
    assert await fetcher.ready()


async def test_fuzz_the_scaler(
    big_nats: NatsServer, nats_client_big: Client, kubeconfig: Path, cluster_objects: ClusterObjects,
    wva_process: StartService,
) -> None:
    nats_url = big_nats.url
    payloads = generate(SEED + 1, COUNT, SCALER_READS)
    await streams.ensure(nats_client_big.jetstream(), S, streams.StreamSpec())
    scaler = await wva_process("scaler", scaler_env(nats_url, kubeconfig))
    before = await rejected(scaler)
    started = time.monotonic()
    await _flood(nats_client_big, payloads)
    await _accounts_for(scaler, before, len(payloads), started)

    # Still decides correctly: one saturated replica of a VA at 1 of 8 replicas -> scale up.
    target = await cluster_objects("normal", replicas=1)
    decisions = await Feed().attach(nats_client_big, "wva.decisions.>")
    js = nats_client_big.jetstream()
    await js.publish(S.targets(target.namespace, target.name), messages.encode(target))
    await js.publish(S.metrics(target.namespace, target.name), messages.encode(saturated_snapshot(target)))

    def scaled_up() -> bool:
        return any(d.desired > d.current and d.reason.startswith("scale_up") for d in decisions.of(messages.Decision, "normal"))

    await eventually(scaled_up, timeout=20, what=f"a scale-up decision\n{scaler.tail()}")
    assert scaler.alive
