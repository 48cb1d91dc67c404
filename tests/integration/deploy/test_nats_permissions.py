"""deploy/nats/nats.conf on a real nats-server: each wva user can do its job and nothing else.

Allowed operations are the ones the services perform (ensure the streams, publish their subjects with
JetStream acks, follow streams with ordered consumers, request/reply on wva.fetch); a publish outside a
user's subjects is refused by the server (a permissions violation reported to the client's error
callback) and never reaches anyone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js.api import PubAck

from shared import messages, natsio, publishing, streams
from shared.settings import Settings
from shared.subjects import SubjectKind, Subjects
from tests.fixtures.servers import NatsServer
from tests.integration.deploy import natsconf

S = Subjects()
NS, VA = "llm", "llama-8b-a100"


@pytest.fixture
def secured_nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    with natsconf.server(tmp_path) as srv:
        yield srv


def settings(srv: NatsServer, user: str, **extra: object) -> Settings:
    return Settings(nats_url=srv.url, nats_user=f"wva-{user}", nats_password=natsconf.password(user), **extra)  # type: ignore[arg-type]


@asynccontextmanager
async def connected(srv: NatsServer, user: str) -> AsyncIterator[tuple[Client, list[Exception]]]:
    """Connect as `user` the way the services do; errors the server reports land in the list."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(
        srv.url,
        user=f"wva-{user}",
        password=natsconf.password(user),
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=2,
        inbox_prefix=natsio.inbox_prefix("wva-tail" if user == "tools" else f"wva-{user}"),
    )
    try:
        yield nc, errors
    finally:
        await nc.close()


def target() -> messages.Target:
    return messages.Target(
        namespace=NS,
        name=VA,
        at=messages.utcnow(),
        model_id="meta/llama-3.1-8b",
        variant_cost=40.0,
        accelerator="A100",
        min_replicas=1,
        max_replicas=8,
        scale_target=messages.ScaleTarget(name=VA),
        resolved=True,
        deployment_generation=1,
        spec_replicas=1,
        ready_replicas=1,
    )


def snapshot() -> messages.MetricsSnapshot:
    now = messages.utcnow()
    return messages.MetricsSnapshot(
        namespace=NS, name=VA, at=now, model_id="meta/llama-3.1-8b", collected_at=now, deployment_generation=1
    )


def invalidation() -> messages.Invalidation:
    return messages.Invalidation(namespace=NS, name=VA, at=messages.utcnow(), reason="template_changed")


def decision() -> messages.Decision:
    return messages.Decision(
        namespace=NS,
        name=VA,
        at=messages.utcnow(),
        current=1,
        desired=2,
        applied=False,
        mode="scale",
        reason="scale_up_saturated",
    )


async def refused(nc: Client, errors: list[Exception], subject: str) -> None:
    before = len(errors)
    await nc.publish(subject, b"x")
    await nc.flush()
    for _ in range(100):
        if len(errors) > before:
            break
        await asyncio.sleep(0.01)
    assert len(errors) > before, f"publishing to {subject} was not refused"
    assert "permissions violation" in str(errors[-1]).lower(), errors[-1]
    assert subject.lower() in str(errors[-1]).lower()


async def first(follower: streams.Follower) -> bytes:
    async for msg in follower:
        return bytes(msg.data)
    raise AssertionError("no message")


async def test_config_holds_no_password_and_the_server_only_bcrypt_hashes(secured_nats: NatsServer) -> None:
    text = natsconf.CONF.read_text()
    assert set(natsconf.password_variables().values()) == set(natsconf.USERS)
    assert "CHANGE-ME" not in text
    hashes = dict(re.findall(r'(?m)^(\w+): "(\S+)"$', natsconf.auth_conf()))
    assert hashes.keys() == natsconf.password_variables().keys()
    for variable, user in natsconf.password_variables().items():
        assert re.fullmatch(r"\$2[aby]\$11\$[./A-Za-z0-9]{53}", hashes[variable]), f"{user}: not bcrypt"
        assert natsconf.password(user) not in natsconf.auth_conf()
    # nats-server warns when any password in its configuration is plain text.
    assert "Plaintext passwords detected" not in secured_nats.log_path.read_text()
    for credentials in ({"user": "wva-scaler", "password": "wrong"}, {}):
        nc = Client()
        try:
            with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
                await nc.connect(secured_nats.url, allow_reconnect=False, connect_timeout=1, **credentials)
        finally:
            await nc.close()  # a refused connect leaves its socket open otherwise
    # A user's hash is not its password: sending the hash itself is refused too.
    nc = Client()
    try:
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
            await nc.connect(
                secured_nats.url,
                user="wva-scaler",
                password=hashes["SCALER_PASSWORD_BCRYPT"],
                allow_reconnect=False,
                connect_timeout=1,
            )
    finally:
        await nc.close()


async def test_monitoring_listens_on_the_loopback_interface_only(secured_nats: NatsServer) -> None:
    (listen,) = re.findall(r"Starting http monitor on (\S+)", secured_nats.log_path.read_text())
    host, port = listen.rsplit(":", 1)
    assert host == "127.0.0.1", listen
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as resp:
        assert resp.status == 200  # what the probes ask, from inside the pod


@pytest.mark.parametrize("user", ["watcher", "fetcher", "scaler"])
async def test_every_service_user_can_ensure_the_streams(secured_nats: NatsServer, user: str) -> None:
    # The client name sets the inbox prefix the server lets each user subscribe to (shared/natsio.py).
    name = "wva-tail" if user == "tools" else f"wva-{user}"
    nc = await natsio.connect(settings(secured_nats, user), name=name)
    try:
        await streams.ensure(nc.jetstream(), S, streams.StreamSpec())
        # and again, with a drifted setting: the update path is allowed too
        done = await streams.ensure(nc.jetstream(), S, streams.StreamSpec(events_max_age=3600.0))
        assert done == ["updated WVA_EVENTS (max_age)"]
    finally:
        await nc.close()
    assert natsconf.violations(secured_nats) == []


async def test_each_service_publishes_its_own_subjects_and_reads_what_it_follows(
    secured_nats: NatsServer,
) -> None:
    async with (
        connected(secured_nats, "watcher") as (watcher, _),
        connected(secured_nats, "fetcher") as (fetcher, _),
        connected(secured_nats, "scaler") as (scaler, _),
        connected(secured_nats, "tools") as (tools, _),
    ):
        await streams.ensure(scaler.jetstream(), S, streams.StreamSpec())
        await natsio.publish(watcher.jetstream(), S.targets(NS, VA), target())
        await natsio.publish(watcher.jetstream(), S.invalidate(NS, VA), invalidation())
        await natsio.publish(fetcher.jetstream(), S.metrics(NS, VA), snapshot())
        # A cycle's snapshots go as one batch, their acks on the fetcher's own inbox subjects.
        batch = [publishing.Outgoing(S.metrics(NS, VA), snapshot())]
        assert all(isinstance(o, PubAck) for o in await publishing.publish_many(fetcher, batch, attempts=1))
        await natsio.publish(scaler.jetstream(), S.decisions(NS, VA), decision())

        reads = {
            "watcher": [SubjectKind.TARGETS],
            "fetcher": [SubjectKind.TARGETS, SubjectKind.INVALIDATE],
            "scaler": [SubjectKind.TARGETS, SubjectKind.METRICS, SubjectKind.INVALIDATE],
            "tools": [SubjectKind.TARGETS, SubjectKind.METRICS, SubjectKind.INVALIDATE, SubjectKind.DECISIONS],
        }
        clients = {"watcher": watcher, "fetcher": fetcher, "scaler": scaler, "tools": tools}
        for user, kinds in reads.items():
            for kind in kinds:
                follower = streams.Follower(clients[user].jetstream(), S.wildcard(kind), start="all")
                data = await asyncio.wait_for(first(follower), 5)
                assert data, f"{user} read nothing on {kind}"
    assert natsio.PUBLISHED  # the acks came back on _INBOX
    assert natsconf.violations(secured_nats) == []


@pytest.mark.parametrize(
    ("user", "forbidden"),
    [
        (
            "watcher",
            [
                "wva.metrics.llm.x",
                "wva.decisions.llm.x",
                "wva.fetch.llm.x",
                "$JS.API.STREAM.DELETE.WVA_TARGETS",
            ],
        ),
        (
            "fetcher",
            [
                "wva.targets.llm.x",
                "wva.invalidate.llm.x",
                "wva.decisions.llm.x",
                "$JS.API.STREAM.PURGE.WVA_METRICS",
            ],
        ),
        (
            "scaler",
            [
                "wva.targets.llm.x",
                "wva.metrics.llm.x",
                "wva.invalidate.llm.x",
                "$JS.API.STREAM.DELETE.WVA_EVENTS",
            ],
        ),
        (
            "tools",
            [
                "wva.targets.llm.x",
                "wva.metrics.llm.x",
                "wva.decisions.llm.x",
                "wva.fetch.llm.x",
                "$JS.API.STREAM.CREATE.WVA_TARGETS",
                "$JS.API.STREAM.DELETE.WVA_TARGETS",
            ],
        ),
    ],
)
async def test_publishing_outside_a_users_subjects_is_refused_and_never_delivered(
    secured_nats: NatsServer, user: str, forbidden: list[str]
) -> None:
    async with (
        connected(secured_nats, "tools") as (observer, _),
        connected(secured_nats, user) as (nc, errors),
    ):
        seen = []

        async def collect(msg: object) -> None:
            seen.append(msg)

        await observer.subscribe("wva.>", cb=collect)
        await observer.flush()
        for subject in forbidden:
            await refused(nc, errors, subject)
        await asyncio.sleep(0.1)
        assert seen == []


async def test_services_cannot_read_what_they_have_no_business_reading(secured_nats: NatsServer) -> None:
    async with connected(secured_nats, "watcher") as (watcher, errors):
        await watcher.subscribe("wva.metrics.>")
        await watcher.flush()
        await asyncio.sleep(0.1)
        assert any(
            "permissions violation" in str(e).lower() and "subscription" in str(e).lower() for e in errors
        )


async def test_fetch_request_reply_between_scaler_and_fetcher_only(secured_nats: NatsServer) -> None:
    async with (
        connected(secured_nats, "fetcher") as (fetcher, f_errors),
        connected(secured_nats, "scaler") as (scaler, _),
    ):

        async def answer(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(messages.encode(snapshot()))

        await fetcher.subscribe(S.wildcard(SubjectKind.FETCH), queue="wva-fetcher", cb=answer)
        await fetcher.flush()
        request = messages.FetchRequest(namespace=NS, name=VA, at=messages.utcnow(), fresh=True)
        reply = await scaler.request(S.fetch(NS, VA), messages.encode(request), timeout=2)
        assert isinstance(messages.metrics_decoder.decode(reply.data), messages.MetricsSnapshot)
        # allow_responses is for replies only: the fetcher cannot publish to an inbox it was not asked on.
        await refused(fetcher, f_errors, "_INBOX.somebody-else")
        # Each service has its own inbox prefix: the fetcher cannot listen in on the scaler's replies.
        before = len(f_errors)
        await fetcher.subscribe(natsio.inbox_prefix("wva-scaler") + ".>")
        await fetcher.flush()
        for _ in range(100):
            if len(f_errors) > before:
                break
            await asyncio.sleep(0.01)
        assert "permissions violation for subscription" in str(f_errors[-1]).lower(), f_errors
    async with connected(secured_nats, "tools") as (tools, errors):
        await refused(tools, errors, S.fetch(NS, VA))


async def test_tools_user_cannot_create_or_change_streams(secured_nats: NatsServer) -> None:
    async with connected(secured_nats, "tools") as (tools, errors):
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await streams.ensure(tools.jetstream(timeout=0.5), S, streams.StreamSpec())
        assert any("permissions violation" in str(e).lower() for e in errors)


async def test_the_real_fetcher_serves_the_scaler_as_their_users(secured_nats: NatsServer) -> None:
    from services.fetcher import service as fetcher_service
    from services.fetcher.settings import FetcherSettings
    from shared import lifecycle

    # Prometheus is unreachable on purpose: the answer is an `unavailable` snapshot, which is still an answer.
    fetcher_settings = FetcherSettings(
        nats_url=secured_nats.url,
        nats_user="wva-fetcher",
        nats_password=natsconf.password("fetcher"),
        http_addr="127.0.0.1:0",
        prometheus_url="http://127.0.0.1:9",
        prometheus_timeout=0.2,
        fetch_budget=0.5,
        fetch_interval=0.0,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        lifecycle.serve("fetcher", fetcher_settings, fetcher_service.main, stop=stop, ready=ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with (
            connected(secured_nats, "watcher") as (watcher, _),
            connected(secured_nats, "scaler") as (scaler, _),
        ):
            await natsio.publish(watcher.jetstream(), S.targets(NS, VA), target())
            request = messages.FetchRequest(namespace=NS, name=VA, at=messages.utcnow(), fresh=True)
            reply = None
            for _ in range(50):  # until the fetcher tracks the target and its queue subscription is up
                try:
                    reply = await scaler.request(S.fetch(NS, VA), messages.encode(request), timeout=1)
                    break
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    await asyncio.sleep(0.1)
            assert reply is not None, "the fetcher never answered"
            answer = messages.metrics_decoder.decode(reply.data)
            assert isinstance(answer, messages.MetricsSnapshot) and answer.name == VA
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 15) == 0
    assert natsconf.violations(secured_nats) == [], "the fetcher did something its NATS user may not"


# ------------------------------------------------------------------ several replicas (leases)


@pytest.mark.parametrize("user", ["watcher", "fetcher", "scaler"])
async def test_every_service_user_takes_leases_and_says_what_it_holds(secured_nats: NatsServer, user: str) -> None:
    from shared import partitions
    from shared.leases import Leases
    from shared.natsleases import NatsLeaseStore

    nc = await natsio.connect(settings(secured_nats, user), name=f"wva-{user}")
    try:
        await streams.ensure(nc.jetstream(), S, streams.StreamSpec())
        names = (partitions.WATCHER,) if user == "watcher" else partitions.numbered(16)
        leases = Leases(NatsLeaseStore(nc, bucket="WVA_LEASES", ttl=15.0), service=user, identity=f"{user}-0a1b2c", partitions=names, ttl=15.0)
        await leases.round()  # creates the bucket (or finds it), announces itself, acquires
        await leases.round()  # renews, reads
        assert leases.owned == frozenset(names) and leases.healthy
        owned = messages.Ownership(namespace=user, name=f"{user}-0a1b2c", at=messages.utcnow(), partitions=len(names), owned=tuple(names))
        await natsio.publish(nc.jetstream(), S.owners(user, f"{user}-0a1b2c"), owned)
        await leases.release()
    finally:
        await nc.close()
    assert natsconf.violations(secured_nats) == []


async def test_the_scaler_follows_its_events_in_one_consumer_as_its_user(secured_nats: NatsServer) -> None:
    async with connected(secured_nats, "scaler") as (scaler, _):
        await streams.ensure(scaler.jetstream(), S, streams.StreamSpec())
        await natsio.publish(scaler.jetstream(), S.decisions(NS, VA), decision())
        wanted = [S.wildcard(SubjectKind.INVALIDATE), S.wildcard(SubjectKind.DECISIONS), S.owners("scaler", "scaler-0a1b2c")]
        data = await asyncio.wait_for(first(streams.Follower(scaler.jetstream(), wanted, start="all")), 5)
        assert b"decision.v1" in data
        restored = await streams.last_values(scaler.jetstream(), S.wildcard(SubjectKind.DECISIONS))
        assert len(restored) == 1
    assert natsconf.violations(secured_nats) == []


@pytest.mark.parametrize(
    ("user", "forbidden"),
    [
        ("scaler", ["$KV.WVA_LEASES.fetcher.0", "$KV.WVA_LEASES.members.watcher.x", "wva.owners.fetcher.x"]),
        ("fetcher", ["$KV.WVA_LEASES.scaler.0", "wva.owners.scaler.x", "$JS.API.STREAM.DELETE.KV_WVA_LEASES"]),
        ("watcher", ["$KV.WVA_LEASES.scaler.3", "wva.owners.scaler.x", "$JS.API.STREAM.PURGE.KV_WVA_LEASES"]),
        ("tools", ["$KV.WVA_LEASES.scaler.0", "wva.owners.scaler.x", "$JS.API.STREAM.CREATE.KV_WVA_LEASES"]),
    ],
)
async def test_no_user_can_take_another_services_leases(secured_nats: NatsServer, user: str, forbidden: list[str]) -> None:
    async with connected(secured_nats, user) as (nc, errors):
        for subject in forbidden:
            await refused(nc, errors, subject)


async def test_the_tools_user_reads_the_lease_bucket(secured_nats: NatsServer) -> None:
    import io

    from services.tools import tail, top
    from shared import partitions
    from shared.leases import Leases
    from shared.natsleases import NatsLeaseStore

    async with connected(secured_nats, "scaler") as (scaler, _):
        await streams.ensure(scaler.jetstream(), S, streams.StreamSpec())
        leases = Leases(NatsLeaseStore(scaler, bucket="WVA_LEASES", ttl=15.0), service="scaler", identity="scaler-0a1b2c",
                        partitions=partitions.numbered(16), ttl=15.0)
        await leases.round()
    tools = Settings(nats_url=secured_nats.url, nats_user="wva-tools", nats_password=natsconf.password("tools"))
    out = io.StringIO()
    assert await top.top(tools, once=True, out=out, width=200) == 0
    assert "scaler-0a1b2c" in out.getvalue()
    lines = io.StringIO()
    assert await asyncio.wait_for(tail.tail_leases(tools, count=3, out=lines), 10) == 0
    assert "lease " in lines.getvalue()
    assert natsconf.violations(secured_nats) == []


def test_the_ha_overlays_cluster_configuration_is_one_nats_server_accepts(tmp_path: Path) -> None:
    import os
    import subprocess

    from tests.integration.deploy import manifests

    docs = manifests.build(manifests.DEPLOY / "overlays/ha")
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("wva-nats-config"))
    text = natsconf.test_config(tmp_path, cluster_conf=config["data"]["cluster.conf"])
    (tmp_path / "nats.conf").write_text(text)
    binary = natsconf.nats_server_binary()
    assert binary is not None
    check = subprocess.run(
        [binary, "-c", str(tmp_path / "nats.conf"), "-t"], capture_output=True, text=True, timeout=30,
        env={**os.environ, "SERVER_NAME": "wva-nats-0"}, check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
