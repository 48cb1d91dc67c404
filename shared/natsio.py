"""NATS connections and publishing, shared by every service.

- :func:`connect` supports every auth option (user/password, token, NKey seed, creds file) and TLS
  (CA, client certificate), retries the first connection with tenacity for a bounded time, logs and
  counts disconnects and reconnects.
- :func:`publish` sends one message to JetStream with a ``Nats-Msg-Id`` so that a retried publish is
  stored once, and retries transient failures a bounded number of times with the same id. When no
  stream answers (a NATS restart with an empty store, a deleted stream) it calls ``heal`` (which
  re-creates the streams) before the next attempt. ``shared.publishing`` sends many at once with the
  same rules.

Credentials never reach a log line or an error message: URLs go through ``shared.redaction``.

Exceptions::

    Exception
    └── NatsStartupError      the first connection failed for good (bad credentials, or nothing
                              answered within WVA_NATS_CONNECT_TIMEOUT)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck
from prometheus_client import Counter, Gauge
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from shared import messages
from shared.redaction import redact
from shared.settings import Settings

log = logging.getLogger("wva.nats")

CONNECTED: Final = Gauge("wva_nats_connected", "1 while the NATS connection is up")
CONNECTION_EVENTS: Final = Counter(
    "wva_nats_connection_events_total", "NATS disconnects, reconnects and errors", ["event"]
)
PUBLISHED: Final = Counter("wva_messages_published_total", "Messages published, by kind", ["kind"])

_CLOSE_TIMEOUT: Final = 2.0  # seconds for a failed attempt's close
_TRANSIENT_CONNECT: Final = (OSError, TimeoutError, nats.errors.NoServersError, nats.errors.TimeoutError)
TRANSIENT_PUBLISH: Final = (
    nats.errors.TimeoutError,
    nats.js.errors.NoStreamResponseError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,  # disconnected, and the client's buffer is full until it is back
)


class NatsStartupError(Exception):
    """The first NATS connection could not be made."""


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not (settings.nats_tls_ca or settings.nats_tls_cert or settings.nats_url.startswith(("tls://", "wss://"))):
        return None
    ctx = ssl.create_default_context(cafile=settings.nats_tls_ca)
    if settings.nats_tls_cert:
        ctx.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key)
    return ctx


def inbox_prefix(client_name: str) -> str:
    """``_INBOX_<client name>``: what the NATS permissions of that client let it subscribe to."""
    return f"_INBOX_{client_name}"


def connect_options(settings: Settings, *, name: str) -> dict[str, Any]:
    """The keyword arguments for ``nats.connect``, from settings (no I/O; unit-testable)."""
    options: dict[str, Any] = {
        "servers": [s.strip() for s in settings.nats_url.split(",")],
        "name": name,
        # Replies and pushed JetStream messages arrive on this service's own inbox subjects, so the
        # server's permissions can keep one service from subscribing to another's replies.
        "inbox_prefix": inbox_prefix(name),
        "connect_timeout": 2,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,  # once connected, never give up: Kubernetes restarts are worse
        "reconnect_time_wait": 1,
        "drain_timeout": 10,
    }
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password
    if settings.nats_token:
        options["token"] = settings.nats_token
    if settings.nats_creds:
        options["user_credentials"] = settings.nats_creds
    if settings.nats_nkey_seed:
        options["nkeys_seed"] = settings.nats_nkey_seed
    tls = _tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    return options


def _on_disconnected(nc: Client) -> Callable[[], Awaitable[None]]:
    async def callback() -> None:
        CONNECTED.set(0)
        if nc.is_closed or nc.is_draining:
            return  # our own drain/close on the way out, not an outage
        CONNECTION_EVENTS.labels(event="disconnected").inc()
        log.warning("NATS disconnected; reconnecting")

    return callback


async def _on_reconnected() -> None:
    CONNECTED.set(1)
    CONNECTION_EVENTS.labels(event="reconnected").inc()
    log.info("NATS reconnected")


async def _on_error(exc: Exception) -> None:
    CONNECTION_EVENTS.labels(event="error").inc()
    log.warning("NATS error: %s", redact(str(exc) or type(exc).__name__))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "NATS not reachable yet (attempt %d): %s",
        state.attempt_number,
        redact(str(exc) or type(exc).__name__),
        extra={"attempt": state.attempt_number},
    )


async def connect(settings: Settings, *, name: str) -> Client:
    """Connect, retrying the first connection for ``settings.nats_connect_timeout`` seconds.

    Authentication failures are not retried: a wrong password does not get better with time.
    """
    options = connect_options(settings, name=name)

    async def once() -> Client:
        nc = Client()
        try:
            await nc.connect(
                **options,
                error_cb=_on_error,
                disconnected_cb=_on_disconnected(nc),
                reconnected_cb=_on_reconnected,
            )
            return nc
        except BaseException as exc:
            # A failed attempt would otherwise leave its socket open. Bounded: after a failed TLS
            # handshake asyncio has already closed the socket, but nats-py's close() waits for the
            # plain stream's end, which never comes once the transport was handed to TLS.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(nc.close(), _CLOSE_TIMEOUT)
            if not isinstance(exc, nats.errors.Error):
                raise
            if "authorization" in str(exc).lower() or "authentication" in str(exc).lower():
                raise NatsStartupError(
                    redact(
                        f"NATS at {settings.nats_url} refused the credentials ({exc}); check WVA_NATS_USER/"
                        "WVA_NATS_PASSWORD, WVA_NATS_TOKEN, WVA_NATS_CREDS or WVA_NATS_NKEY_SEED"
                    )
                ) from None
            raise

    # nats-py retries a failed first connection by itself when reconnecting is allowed, forever with
    # max_reconnect_attempts=-1 and without telling auth errors apart. So the first connection is
    # made with reconnects off and retried here (bounded, logged); once up, reconnects are on.
    options["allow_reconnect"] = False
    options["max_reconnect_attempts"] = 1  # 0 would mean "forever" inside nats-py's server selection
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(_TRANSIENT_CONNECT),
            stop=stop_after_delay(settings.nats_connect_timeout),
            wait=wait_exponential(multiplier=0.2, max=5) + wait_random(0, 0.2),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                nc = await once()
    except NatsStartupError:
        raise
    except _TRANSIENT_CONNECT as exc:
        raise NatsStartupError(
            redact(
                f"could not connect to NATS at {settings.nats_url} within {settings.nats_connect_timeout:g}s "
                f"(WVA_NATS_CONNECT_TIMEOUT): {exc or type(exc).__name__}"
            )
        ) from None
    nc.options["allow_reconnect"] = True
    nc.options["max_reconnect_attempts"] = -1
    CONNECTED.set(1)
    # netloc would carry user:password@; host and port are what a reader needs.
    url = nc.connected_url
    log.info("connected to NATS", extra={"server": f"{url.hostname}:{url.port}" if url else ""})
    return nc


Heal = Callable[[], Awaitable[object]]
PUBLISH_WAIT: Final = wait_exponential(multiplier=0.1, max=1)  # between attempts (shared.publishing too)


async def publish(
    js: JetStreamContext,
    subject: str,
    message: msgspec.Struct,
    *,
    msg_id: str | None = None,
    attempts: int = 4,
    timeout: float = 2.0,
    msg_ttl: float | None = None,
    heal: Heal | None = None,
) -> PubAck:
    """Publish to JetStream and wait for the ack; retries reuse one ``Nats-Msg-Id``.

    ``msg_ttl`` (whole seconds) makes the server drop the message after that long (``Nats-TTL``; the
    stream must allow it). ``heal`` is awaited when no stream took the message, before the retry.
    """
    payload = messages.encode(message)
    headers = {"Nats-Msg-Id": msg_id or uuid.uuid4().hex}
    ack: PubAck | None = None
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_PUBLISH),
        stop=stop_after_attempt(attempts),
        wait=PUBLISH_WAIT,
        reraise=True,
    ):
        with attempt:
            try:
                ack = await js.publish(subject, payload, timeout=timeout, headers=dict(headers), msg_ttl=msg_ttl)
            except nats.js.errors.NoStreamResponseError:
                if heal is not None:
                    await heal_streams(heal)
                raise
    assert ack is not None  # AsyncRetrying re-raises or runs the block
    PUBLISHED.labels(kind=messages.kind_of(message)).inc()
    return ack


async def heal_streams(heal: Heal) -> None:
    """Await ``heal`` (re-create the streams); a failure is logged, never raised."""
    try:
        await heal()
    except Exception as exc:  # NATS may still be on its way back; the retry (or the next publish) tells
        log.warning("could not re-create the streams: %s", redact(str(exc) or type(exc).__name__))
