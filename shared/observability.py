"""Logs, Prometheus metrics and the health/metrics HTTP endpoint every service serves.

- Logs are JSON lines (one object per line, with the fields passed in ``extra``) unless the output is
  a terminal, where a readable console format is used. ``WVA_LOG_FORMAT`` forces either.
- ``/healthz`` answers 200 while the event loop runs; ``/readyz`` answers 200 only when every
  readiness check registered with :class:`Health` is true (NATS connected, streams ensured, …);
  ``/metrics`` is prometheus-client's exposition of the default registry.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

MESSAGES_REJECTED: Final = Counter(
    "wva_messages_rejected_total",
    "Messages that could not be decoded or used, by subject kind and reason",
    ["subject_kind", "reason"],
)

# Attributes every LogRecord has; anything else came from ``extra`` and belongs in the JSON line.
_STANDARD_ATTRS: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


def count_rejected(subject_kind: str, reason: str) -> None:
    MESSAGES_REJECTED.labels(subject_kind=subject_kind, reason=reason).inc()


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS level logger msg key=value …`` — readable on a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")
        )
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        text = f"{ts} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if extras:
            text += f"  {extras}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(*, service: str, fmt: str = "auto", level: str = "info") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if use_json else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries log every reconnect attempt at error level; our own lines say what matters.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Health:
    """Named readiness checks; ready when all are true and at least one is registered.

    A check is a fixed flag or a callable read at request time (e.g. "is NATS connected now").
    """

    def __init__(self) -> None:
        self._checks: dict[str, bool | Callable[[], bool]] = {}
        self._details: dict[str, Callable[[], object]] = {}

    def set(self, name: str, ok: bool | Callable[[], bool]) -> None:
        self._checks[name] = ok

    def describe(self, name: str, detail: Callable[[], object]) -> None:
        """Something ``/readyz`` shows under ``details`` (e.g. the leases a replica holds)."""
        self._details[name] = detail

    def details(self) -> dict[str, object]:
        return {name: detail() for name, detail in self._details.items()}

    def report(self) -> dict[str, bool]:
        return {name: bool(check() if callable(check) else check) for name, check in self._checks.items()}

    @property
    def ready(self) -> bool:
        report = self.report()
        return bool(report) and all(report.values())


class HttpServer:
    """``/healthz``, ``/readyz``, ``/metrics`` on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, health: Health, addr: str) -> None:
        host, _, port = addr.rpartition(":")
        self._host, self._port = host, int(port)
        self._health = health
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server  # aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        report = self._health.report()
        ready = bool(report) and all(report.values())
        body: dict[str, object] = {"ready": ready, "checks": report}
        details = self._health.details()
        if details:
            body["details"] = details
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
