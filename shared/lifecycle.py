"""The service runner: one way to start, run and stop every wva service.

``serve()`` owns an ``AsyncExitStack`` (HTTP server, NATS connection drained on exit) and runs the
service's ``main(runtime)``. SIGTERM/SIGINT set an ``asyncio.Event``; the runner then cancels
``main`` and drains NATS. A ``main`` that raises fails the process with exit status 1 and a log line,
so Kubernetes restarts it; nothing polls a flag.

Services put their loops in an ``asyncio.TaskGroup`` inside ``main``, so a crashing loop takes the
service down loudly instead of leaving it half alive.

Streams heal (docs/design.md §11): besides ``main`` the runner keeps the streams — every
``WVA_STREAM_CHECK_INTERVAL`` it ensures they exist (re-creating any lost with a wiped store), and the
readiness check ``streams`` is false while it cannot. Services publish through :meth:`Runtime.publish`
(one message) or :meth:`Runtime.publish_many` (many at once, acks awaited together), which re-create
missing streams before retrying and give tombstones their ``WVA_TOMBSTONE_TTL``.

Several replicas (docs/design.md §11): with ``WVA_LEASE_BACKEND=nats`` (a KV bucket) or ``kubernetes``
(Lease objects, through the service's kubeconfig or in-cluster account) the runtime carries this
replica's :class:`shared.leases.Leases` on its service's partitions (the watcher's one partition, or
``WVA_PARTITIONS`` numbered ones); the service starts their loop once it can do the work, and the
runner gives every lease back on a clean shutdown, so another replica takes over at once. ``/readyz``
then has a ``leases`` check and says what this replica holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck

from shared import natsio, partitions, publishing, streams
from shared.leases import Leases, make_identity
from shared.messages import MetricsDeleted, Ownership, TargetDeleted, utcnow
from shared.natsleases import NatsLeaseStore
from shared.observability import Health, HttpServer, setup_logging
from shared.redaction import redact
from shared.settings import Settings, SettingsError, load
from shared.subjects import Subjects

log = logging.getLogger("wva.lifecycle")


TOMBSTONES: Final = (TargetDeleted, MetricsDeleted)
_HEAL_PAUSE: Final = 1.0  # seconds between two stream repairs asked for by failing publishes


@dataclass
class Runtime:
    """What a running service gets from the runner."""

    name: str
    settings: Settings
    nc: Client
    js: JetStreamContext
    subjects: Subjects
    health: Health
    stop: asyncio.Event
    http_port: int = 0
    spec: streams.StreamSpec = field(default_factory=streams.StreamSpec)
    identity: str = ""
    leases: Leases | None = None  # None: one replica does all the work (WVA_LEASE_BACKEND=none)
    _healing: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _healed_at: float = field(default=float("-inf"), init=False, repr=False)

    async def publish(
        self, subject: str, message: msgspec.Struct, *, msg_id: str | None = None, attempts: int = 4,
        timeout: float = 2.0,
    ) -> PubAck:
        """``natsio.publish`` that re-creates lost streams and lets tombstones expire."""
        return await natsio.publish(
            self.js, subject, message, msg_id=msg_id, attempts=attempts, timeout=timeout,
            msg_ttl=self._ttl(message), heal=self.ensure_streams,
        )

    async def publish_many(
        self, batch: Sequence[publishing.Outgoing], *, attempts: int = 4, timeout: float = 2.0
    ) -> list[PubAck | Exception]:
        """``publishing.publish_many`` that re-creates lost streams and lets tombstones expire: per message
        its ack or the error it failed with."""
        batch = [self._expiring(o) for o in batch]
        return await publishing.publish_many(self.nc, batch, attempts=attempts, timeout=timeout, heal=self.ensure_streams)

    def _expiring(self, o: publishing.Outgoing) -> publishing.Outgoing:
        ttl = self._ttl(o.message) if o.msg_ttl is None else None
        return o if ttl is None else dataclasses.replace(o, msg_ttl=ttl)

    def _ttl(self, message: msgspec.Struct) -> float | None:
        ttl = self.settings.tombstone_ttl if isinstance(message, TOMBSTONES) and self.spec.message_ttl else 0.0
        return ttl or None

    async def ensure_streams(self) -> bool:
        """Create missing streams (at most once a second however many publishes ask); never raises."""
        loop = asyncio.get_running_loop()
        async with self._healing:
            if loop.time() - self._healed_at < _HEAL_PAUSE:
                return bool(self.health.report().get("streams"))
            self._healed_at = loop.time()
            try:
                done = await streams.ensure(self.js, self.subjects, self.spec)
            except Exception as exc:
                if self.health.report().get("streams", True):
                    log.warning("streams unavailable: %s", redact(str(exc) or type(exc).__name__))
                self.health.set("streams", False)
                return False
            if done:
                log.warning("streams were missing or changed: %s", "; ".join(done), extra={"done": done})
            elif not self.health.report().get("streams", True):
                log.info("streams available again")
            self.health.set("streams", True)
            return True

    async def run_leases(self) -> None:
        """Take part in the leases, and say on ``<prefix>.owners.<service>.<identity>`` what this replica
        holds whenever that changes (the latest state wins; retried while NATS is away)."""
        leases = self.leases
        if leases is None:
            return
        changes = leases.subscribe()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(leases.run(), name=f"{self.name}-leases")
            while True:
                owned = await changes.get()
                while not changes.empty():
                    owned = changes.get_nowait()
                while not await self.announce(owned):
                    await asyncio.sleep(leases.period)
                    while not changes.empty():
                        owned = changes.get_nowait()

    async def announce(self, owned: frozenset[str]) -> bool:
        """Publish this replica's Ownership; False (logged) when NATS did not take it."""
        assert self.leases is not None
        message = Ownership(
            namespace=self.name, name=self.identity, at=utcnow(), partitions=len(self.leases.partitions),
            owned=tuple(sorted(owned, key=lambda p: (len(p), p))),
        )
        try:
            await self.publish(self.subjects.owners(self.name, self.identity), message)
        except Exception as exc:  # NATS away: the leases are fenced by time meanwhile; try again
            log.warning("could not announce the partitions held: %s", redact(str(exc) or type(exc).__name__))
            return False
        return True

    async def keep_streams(self) -> None:
        """Check the streams every ``WVA_STREAM_CHECK_INTERVAL`` (the ``streams`` readiness check)."""
        while True:
            await asyncio.sleep(self.settings.stream_check_interval)
            await self.ensure_streams()


ServiceMain = Callable[[Runtime], Coroutine[Any, Any, None]]

_RELEASE_TIMEOUT: Final = 2.0  # seconds a clean shutdown spends giving leases back


def lease_partitions(name: str, settings: Settings) -> tuple[str, ...]:
    """The partitions replicas of service ``name`` share: the watcher's one, or numbered ones."""
    return (partitions.WATCHER,) if name == "watcher" else partitions.numbered(settings.partitions)


def leases_bucket(settings: Settings, subjects: Subjects) -> str:
    return settings.leases_bucket or subjects.stream_name("LEASES")


_SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_DEFAULT_NAMESPACE: Final = "wva-system"  # deploy/'s, out of a cluster


def lease_namespace(settings: Settings) -> str:
    """Where the Lease objects live: ``WVA_LEASE_NAMESPACE``, else this pod's namespace."""
    if settings.lease_namespace:
        return settings.lease_namespace
    with contextlib.suppress(OSError):
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or _DEFAULT_NAMESPACE
    return _DEFAULT_NAMESPACE


class LeaseSetupError(Exception):
    """The lease backend cannot be used at all (no Kubernetes client configuration); safe to log."""


async def make_leases(
    name: str, settings: Settings, nc: Client, subjects: Subjects, identity: str, stack: AsyncExitStack
) -> Leases | None:
    """This replica's leases on the store ``WVA_LEASE_BACKEND`` names (None: ``none``); a Kubernetes
    client it makes is closed with ``stack``."""
    common: dict[str, Any] = {
        "service": name, "identity": identity, "partitions": lease_partitions(name, settings), "ttl": settings.lease_ttl,
    }
    if settings.lease_backend == "nats":
        bucket = NatsLeaseStore(nc, bucket=leases_bucket(settings, subjects), ttl=settings.lease_ttl, replicas=settings.stream_replicas)
        return Leases(bucket, **common)
    if settings.lease_backend == "kubernetes":
        # The watcher's and the scaler's kubeconfig setting; the fetcher has none and uses $KUBECONFIG
        # or its in-cluster account, as kube.api_client does.
        # Imported here: the Kubernetes client is heavy, and only this backend (of the runtime) needs it.
        from kubernetes_asyncio import config as kube_config

        from shared import kube
        from shared.kubeleases import KubernetesLeaseStore

        try:
            api = await kube.api_client(getattr(settings, "kubeconfig", None))
        except (kube_config.ConfigException, OSError, ValueError) as exc:
            raise LeaseSetupError(
                f"WVA_LEASE_BACKEND=kubernetes needs the Kubernetes API: {redact(str(exc)) or type(exc).__name__} "
                "(run in a pod with a service account, or set KUBECONFIG)"
            ) from None
        stack.push_async_callback(api.close)
        api.user_agent = f"wva-{name}/{identity}"  # who wrote, in the API server's audit log
        store = KubernetesLeaseStore(api, namespace=lease_namespace(settings), ttl=settings.lease_ttl)
        return Leases(store, **common)
    return None


def stream_spec(settings: Settings, nc: Client | None = None) -> streams.StreamSpec:
    """The streams for these settings; per-message TTL only where the server has it (2.11+)."""
    version = nc.connected_server_version if nc is not None else None
    message_ttl = bool(settings.tombstone_ttl) and (version is None or (version.major, version.minor) >= (2, 11))
    if settings.tombstone_ttl and not message_ttl:
        log.warning(
            "nats-server %s has no per-message TTL (2.11+): tombstones of deleted VAs are kept", version,
        )
    return streams.StreamSpec(
        replicas=settings.stream_replicas, events_max_age=settings.events_max_age, message_ttl=message_ttl
    )


async def _drain(nc: Client) -> None:
    if nc.is_closed:
        return
    try:
        await nc.drain()
    except Exception as exc:  # drain is best effort on the way out; say why it was not clean
        log.warning("NATS drain failed: %s", exc)
        await nc.close()


async def serve(
    name: str,
    settings: Settings,
    main: ServiceMain,
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> int:
    """Run ``main`` until it returns, raises, or ``stop`` is set; returns the exit status.

    Without ``stop`` the runner maps SIGTERM/SIGINT to one. ``ready`` (for tests and the sandbox)
    is set once the runtime is built and ``main`` has been started.
    """
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    health = Health()
    async with AsyncExitStack() as stack:
        http = HttpServer(health, settings.http_addr)
        await http.start()
        stack.push_async_callback(http.stop)
        try:
            nc = await natsio.connect(settings, name=f"wva-{name}")
        except natsio.NatsStartupError as exc:
            log.error("%s", exc)
            return 1
        stack.push_async_callback(_drain, nc)
        health.set("nats", lambda: nc.is_connected)
        js = nc.jetstream()
        subjects = Subjects(settings.subject_prefix)
        spec = stream_spec(settings, nc)
        await streams.ensure(js, subjects, spec)
        health.set("streams", True)
        identity = make_identity()
        try:
            leases = await make_leases(name, settings, nc, subjects, identity, stack)
        except LeaseSetupError as exc:
            log.error("%s", exc)
            return 1
        if leases is not None:
            health.set("leases", lambda: leases.healthy)
            health.describe("leases", leases.report)
        runtime = Runtime(
            name=name, settings=settings, nc=nc, js=js, subjects=subjects, health=health, stop=stop,
            http_port=http.port, spec=spec, identity=identity, leases=leases,
        )
        log.info(
            "%s started", name,
            extra={"http_port": http.port, "prefix": settings.subject_prefix, "identity": identity,
                   "leases": settings.lease_backend},
        )
        main_task = asyncio.create_task(main(runtime), name=f"{name}-main")
        stop_task = asyncio.create_task(stop.wait(), name=f"{name}-stop")
        keeper = asyncio.create_task(runtime.keep_streams(), name=f"{name}-streams")
        if ready is not None:
            ready.set()
        done, _ = await asyncio.wait({main_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop_task, keeper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if main_task not in done:
            log.info("%s stopping: draining NATS", name)
            main_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main_task
            if leases is not None:
                held = leases.owned
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(leases.release(), _RELEASE_TIMEOUT)
                    if held:
                        await asyncio.wait_for(runtime.announce(frozenset()), _RELEASE_TIMEOUT)
            return 0
        failure = main_task.exception()
        if failure is not None:
            log.error("%s crashed: %s", name, failure, exc_info=failure)
            return 1
        return 0
    return 0  # pragma: no cover - the stack above always returns


def run_command(name: str, settings_class: type[Settings], args: argparse.Namespace, main: ServiceMain) -> int:
    """``wva <name>``: load and validate settings (exit 2 naming the bad one), then :func:`run`."""
    try:
        settings = load(settings_class, args)
    except SettingsError as exc:
        print(f"wva {name}: {exc}", file=sys.stderr)
        return 2
    return run(name, settings, main)


def run(name: str, settings: Settings, main: ServiceMain) -> int:
    """Entry point for ``wva <service>``: logging, event loop, exit status."""
    setup_logging(service=name, fmt=settings.log_format, level=settings.log_level)
    try:
        return asyncio.run(serve(name, settings, main))
    except KeyboardInterrupt:
        return 130
