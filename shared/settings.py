"""Settings: defaults, ``WVA_…`` environment variables and CLI flags, validated at start-up.

A settings class is a frozen dataclass whose fields are declared with :func:`setting`. The same
declaration gives the default, the environment variable, the CLI flag (``--fetch-interval`` for
``fetch_interval``) and the parser. Precedence: flag > environment > default. A bad value raises
:class:`SettingsError` naming the setting and the value, and the service stops with that message.

Exceptions::

    ValueError
    └── SettingsError
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlparse

from shared import redaction, subjects

T = TypeVar("T")
S = TypeVar("S", bound="Settings")


class SettingsError(ValueError):
    """A setting with a value that cannot be used."""


# ------------------------------------------------------------------------- value parsers

_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration(text: str) -> float:
    """``"15s"``, ``"5m"``, ``"1h"``, ``"250ms"`` or plain seconds, as float seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"invalid duration {text!r} (expected a number with unit ms, s, m or h, e.g. 15s or 5m)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"invalid boolean {text!r} (expected true or false)")


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"invalid integer {text!r}") from None
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise ValueError("must be at least 1")
    return value


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"invalid value {text!r} (expected one of: {', '.join(allowed)})")
        return text

    return parse


def url(*schemes: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        for part in text.split(","):
            parsed = urlparse(part.strip())
            if parsed.scheme not in schemes or not parsed.hostname:
                raise ValueError(f"invalid URL {part.strip()!r} (expected {' or '.join(schemes)}://host[:port])")
            try:
                _ = parsed.port  # raises on a non-numeric port
            except ValueError:
                raise ValueError(f"invalid port in URL {part.strip()!r}") from None
        return text

    return parse


def csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {text!r} (expected host:port, e.g. 0.0.0.0:8080)")
    return text


def prefix(text: str) -> str:
    return subjects.validate_prefix(text)


def optional_path(text: str) -> str | None:
    return text or None


def optional_str(text: str) -> str | None:
    return text or None


def namespace_name(text: str) -> str:
    """A Kubernetes namespace (empty: the default)."""
    if text and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", text):
        raise ValueError(f"invalid namespace {text!r} (a DNS label: lowercase letters, digits and '-', at most 63)")
    return text


def bucket(text: str) -> str:
    """A JetStream KV bucket name (empty: the default, derived from the subject prefix)."""
    if text and not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", text):
        raise ValueError(f"invalid bucket name {text!r} (letters, digits, '_' and '-', at most 64)")
    return text


# ------------------------------------------------------------------------- declarations


def setting(
    env: str,
    default: Any,
    parse: Callable[[str], Any] = str,
    help: str = "",
    *,
    secret: bool = False,
) -> Any:
    """Declare a dataclass field that is loaded from ``env`` / ``--flag`` with ``parse``."""
    return dataclasses.field(default=default, metadata={"env": env, "parse": parse, "help": help, "secret": secret})


LogFormat = Literal["auto", "json", "console"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Settings every service shares."""

    nats_url: str = setting(
        "WVA_NATS_URL", "nats://127.0.0.1:4222", url("nats", "tls", "ws", "wss"), "NATS server URL(s), comma-separated"
    )
    nats_user: str | None = setting("WVA_NATS_USER", None, optional_str, "NATS user name")
    nats_password: str | None = setting("WVA_NATS_PASSWORD", None, optional_str, "NATS password", secret=True)
    nats_token: str | None = setting("WVA_NATS_TOKEN", None, optional_str, "NATS token", secret=True)
    nats_creds: str | None = setting("WVA_NATS_CREDS", None, optional_path, "path of a NATS .creds file")
    nats_nkey_seed: str | None = setting("WVA_NATS_NKEY_SEED", None, optional_path, "path of an NKey seed file")
    nats_tls_ca: str | None = setting("WVA_NATS_TLS_CA", None, optional_path, "CA bundle to verify the NATS server")
    nats_tls_cert: str | None = setting("WVA_NATS_TLS_CERT", None, optional_path, "client certificate for NATS mTLS")
    nats_tls_key: str | None = setting("WVA_NATS_TLS_KEY", None, optional_path, "client key for NATS mTLS")
    nats_connect_timeout: float = setting(
        "WVA_NATS_CONNECT_TIMEOUT", 60.0, duration, "how long to keep retrying the first NATS connection"
    )
    subject_prefix: str = setting("WVA_SUBJECT_PREFIX", subjects.DEFAULT_PREFIX, prefix, "NATS subject prefix")
    stream_replicas: int = setting("WVA_STREAM_REPLICAS", 1, positive_int, "JetStream stream replicas (3 on a cluster)")
    events_max_age: float = setting("WVA_EVENTS_MAX_AGE", 86400.0, duration, "how long the event log keeps events")
    tombstone_ttl: float = setting(
        "WVA_TOMBSTONE_TTL", 3600.0, duration,
        "how long a deleted VA's tombstone stays on the targets and metrics streams (0: forever)",
    )
    stream_check_interval: float = setting(
        "WVA_STREAM_CHECK_INTERVAL", 5.0, duration,
        "how often a service checks its streams exist (and re-creates lost ones)",
    )
    lease_backend: str = setting(
        "WVA_LEASE_BACKEND", "none", choice("none", "nats", "kubernetes"),
        "how replicas share the work: none (this replica does all of it), nats (leases in a NATS KV bucket) "
        "or kubernetes (coordination.k8s.io Lease objects, where a KV bucket is not allowed)",
    )
    partitions: int = setting(
        "WVA_PARTITIONS", 16, positive_int, "partitions of the model groups that replicas share (the same everywhere)"
    )
    lease_ttl: float = setting(
        "WVA_LEASE_TTL", 15.0, duration, "how long a lease outlives its last renewal (renewed every third of it)"
    )
    leases_bucket: str = setting("WVA_LEASES", "", bucket, "NATS KV bucket of the leases (default <PREFIX>_LEASES)")
    lease_namespace: str = setting(
        "WVA_LEASE_NAMESPACE", "", namespace_name,
        "namespace of the Lease objects with WVA_LEASE_BACKEND=kubernetes (default: this pod's own namespace)",
    )
    http_addr: str = setting("WVA_HTTP_ADDR", "0.0.0.0:8080", host_port, "address of /healthz, /readyz and /metrics")
    log_format: str = setting("WVA_LOG_FORMAT", "auto", choice("auto", "json", "console"), "log format")
    log_level: str = setting(
        "WVA_LOG_LEVEL", "info", choice("debug", "info", "warning", "error"), "minimum log level"
    )

    def validate(self) -> None:
        """Cross-field checks; subclasses extend it. Raise :class:`SettingsError`."""
        if self.nats_tls_cert and not self.nats_tls_key:
            raise SettingsError("WVA_NATS_TLS_CERT is set but WVA_NATS_TLS_KEY is not: mTLS needs both")
        if self.nats_user and self.nats_password is None:
            raise SettingsError("WVA_NATS_USER is set but WVA_NATS_PASSWORD is not")
        if self.tombstone_ttl and self.tombstone_ttl < 1:
            raise SettingsError("WVA_TOMBSTONE_TTL must be 0 (keep forever) or at least 1s (NATS counts whole seconds)")
        if self.stream_check_interval <= 0:
            raise SettingsError("WVA_STREAM_CHECK_INTERVAL must be positive")
        if self.lease_ttl < 1.5:
            raise SettingsError("WVA_LEASE_TTL must be at least 1.5s (a replica renews every third of it)")
        if self.partitions > 4096:
            raise SettingsError("WVA_PARTITIONS must be at most 4096")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type[Settings]) -> None:
    """Add one flag per setting; values stay strings so :func:`load` parses flags and env alike."""
    group = parser.add_argument_group("settings (flag > environment > default)")
    for f in dataclasses.fields(cls):
        meta = f.metadata
        shown = "***" if meta.get("secret") else f.default
        group.add_argument(
            _flag(f.name),
            dest=f.name,
            default=None,
            metavar="VALUE",
            # argparse %-formats help text; a literal "%" in a description must not break --help.
            help=f"{meta.get('help', '')} [env {meta['env']}, default {shown}]".replace("%", "%%"),
        )


def load(cls: type[S], args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> S:
    """Build ``cls`` from flags, then environment, then defaults; validate; raise :class:`SettingsError`."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        raw = getattr(args, f.name, None) if args is not None else None
        source = _flag(f.name)
        if raw is None:
            raw = env.get(meta["env"])
            source = meta["env"]
        if raw is None:
            continue
        try:
            values[f.name] = meta["parse"](raw)
        except (ValueError, subjects.SubjectError) as exc:
            # Never echo a secret: a secret setting is shown as ***, and wherever the parser's message
            # quotes it, so is the value; URLs lose their user:password@ (WVA_NATS_URL may carry one).
            if meta.get("secret"):
                raise SettingsError(f"{source}=***: {redaction.without(str(exc), raw, raw.strip())}") from None
            raise SettingsError(redaction.redact(f"{source}={raw!r}: {exc}")) from None
    settings = cls(**values)
    try:
        settings.validate()
    except SettingsError as exc:
        raise SettingsError(redaction.without(str(exc), *_secrets(settings))) from None
    return settings


def _secrets(settings: Settings) -> list[str]:
    return [
        str(getattr(settings, f.name))
        for f in dataclasses.fields(settings)
        if f.metadata.get("secret") and getattr(settings, f.name)
    ]


def env_name(cls: type[Settings], field_name: str) -> str:
    """The environment variable of a field, for messages that tell users what to change."""
    for f in dataclasses.fields(cls):
        if f.name == field_name:
            return str(f.metadata["env"])
    raise KeyError(field_name)
