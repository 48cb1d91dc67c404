"""NATS subjects: the only place they are built and parsed (docs/design.md §3).

Layout: ``<prefix>.<kind>.<namespace>.<name>`` (for ``owners``: ``<prefix>.owners.<service>.<replica>``).

A namespace is an RFC 1123 label and is used as is. An object name is an RFC 1123 subdomain and may
contain ``.``, the NATS token separator, so ``.`` is encoded as ``_`` — a character Kubernetes never
allows in a name, which makes the mapping reversible. Names are validated before encoding: an invalid
name raises :class:`InvalidName`, never produces a malformed subject (the server silently drops
messages on subjects with empty tokens).

Exceptions::

    ValueError
    └── SubjectError
        ├── InvalidName      a namespace or object name that Kubernetes would reject
        ├── InvalidPrefix    a prefix that is not a dot-separated list of plain tokens
        └── UnknownSubject   parse() of a subject this layout did not build
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

DEFAULT_PREFIX: Final = "wva"

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# \A…\Z, not ^…$: "$" also matches before a trailing newline, and a newline in a subject breaks the
# NATS protocol line it is written on. The patterns are public so wire decoders check the same rule.
LABEL_PATTERN: Final = rf"\A{_LABEL}\Z"
SUBDOMAIN_PATTERN: Final = rf"\A{_LABEL}(\.{_LABEL})*\Z"
MAX_LABEL: Final = 63
MAX_SUBDOMAIN: Final = 253
_LABEL_RE: Final = re.compile(LABEL_PATTERN)
_SUBDOMAIN_RE: Final = re.compile(SUBDOMAIN_PATTERN)
_PREFIX_TOKEN_RE: Final = re.compile(r"\A[A-Za-z0-9_-]+\Z")


class SubjectError(ValueError):
    """Base of every error raised here."""


class InvalidName(SubjectError):
    """A namespace or object name that is not a valid Kubernetes name."""


class InvalidPrefix(SubjectError):
    """A subject prefix that cannot be used."""


class UnknownSubject(SubjectError):
    """A subject that does not follow this module's layout."""


class SubjectKind(StrEnum):
    """The second token of every subject; one per contract in docs/design.md §3."""

    TARGETS = "targets"
    METRICS = "metrics"
    INVALIDATE = "invalidate"
    DECISIONS = "decisions"
    FETCH = "fetch"
    OWNERS = "owners"  # <prefix>.owners.<service>.<replica identity>: what a replica holds (§11)


def _shown(value: str) -> str:
    # Names come from the wire too: an error message quotes a bounded part of one.
    return repr(value) if len(value) <= 80 else repr(value[:80]) + f"… ({len(value)} characters)"


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` when it is an RFC 1123 label, else raise :class:`InvalidName`."""
    if len(namespace) > MAX_LABEL or not _LABEL_RE.match(namespace):
        raise InvalidName(
            f"invalid namespace {_shown(namespace)}: must be an RFC 1123 label (at most {MAX_LABEL} "
            "characters of lowercase letters, digits and '-', starting and ending with a letter or digit)"
        )
    return namespace


def validate_name(name: str) -> str:
    """Return ``name`` when it is an RFC 1123 subdomain, else raise :class:`InvalidName`."""
    if len(name) > MAX_SUBDOMAIN or not _SUBDOMAIN_RE.match(name):
        raise InvalidName(
            f"invalid object name {_shown(name)}: must be an RFC 1123 subdomain (at most {MAX_SUBDOMAIN} "
            "characters; dot-separated labels of lowercase letters, digits and '-', each starting and "
            "ending with a letter or digit)"
        )
    return name


def encode_name(name: str) -> str:
    """Encode a validated object name as one subject token."""
    return validate_name(name).replace(".", "_")


def decode_name(token: str) -> str:
    """Inverse of :func:`encode_name`; raises :class:`InvalidName` for a token it could not have made."""
    return validate_name(token.replace("_", "."))


def validate_prefix(prefix: str) -> str:
    tokens = prefix.split(".")
    if not prefix or not all(_PREFIX_TOKEN_RE.match(t) for t in tokens):
        raise InvalidPrefix(
            f"invalid subject prefix {prefix!r}: must be one or more dot-separated tokens of letters, "
            "digits, '_' and '-' (no wildcards, spaces or empty tokens)"
        )
    return prefix


@dataclass(frozen=True, slots=True)
class SubjectRef:
    """What a subject names: which contract, and which VA."""

    kind: SubjectKind
    namespace: str
    name: str


class Subjects:
    """Builds and parses subjects for one installation (one prefix)."""

    __slots__ = ("_depth", "prefix")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = validate_prefix(prefix)
        self._depth = prefix.count(".") + 1

    def build(self, kind: SubjectKind, namespace: str, name: str) -> str:
        return f"{self.prefix}.{kind.value}.{validate_namespace(namespace)}.{encode_name(name)}"

    def targets(self, namespace: str, name: str) -> str:
        return self.build(SubjectKind.TARGETS, namespace, name)

    def metrics(self, namespace: str, name: str) -> str:
        return self.build(SubjectKind.METRICS, namespace, name)

    def invalidate(self, namespace: str, name: str) -> str:
        return self.build(SubjectKind.INVALIDATE, namespace, name)

    def decisions(self, namespace: str, name: str) -> str:
        return self.build(SubjectKind.DECISIONS, namespace, name)

    def fetch(self, namespace: str, name: str) -> str:
        return self.build(SubjectKind.FETCH, namespace, name)

    def owners(self, service: str, identity: str) -> str:
        """Where a replica says which partitions it holds (``namespace`` is the service there)."""
        return self.build(SubjectKind.OWNERS, service, identity)

    def wildcard(self, kind: SubjectKind | None = None) -> str:
        """``<prefix>.<kind>.>`` for one contract, ``<prefix>.>`` for all of them."""
        return f"{self.prefix}.>" if kind is None else f"{self.prefix}.{kind.value}.>"

    def parse(self, subject: str) -> SubjectRef:
        """Exact inverse of :meth:`build`."""
        tokens = subject.split(".")
        if len(tokens) != self._depth + 3 or ".".join(tokens[: self._depth]) != self.prefix:
            raise UnknownSubject(f"subject {subject!r} is not <{self.prefix}>.<kind>.<namespace>.<name>")
        kind_token, namespace, name_token = tokens[self._depth :]
        try:
            kind = SubjectKind(kind_token)
        except ValueError:
            raise UnknownSubject(f"subject {subject!r} has unknown kind {kind_token!r}") from None
        return SubjectRef(kind, validate_namespace(namespace), decode_name(name_token))

    def stream_name(self, suffix: str) -> str:
        """JetStream stream names are unique per server, so they carry the prefix too.

        The default prefix gives docs/design.md's names (``WVA_TARGETS``…).
        """
        base = re.sub(r"[^A-Za-z0-9]", "_", self.prefix).upper()
        return f"{base}_{suffix}"
