"""Where leases are kept: the few operations :class:`shared.leases.Leases` needs from a store, and what
they mean (docs/design.md §11). Two stores implement them: a NATS KV bucket (:mod:`shared.natsleases`,
``WVA_LEASE_BACKEND=nats``) and Kubernetes Lease objects (:mod:`shared.kubeleases`, ``kubernetes``).

Keys are the NATS bucket's, whatever the store: ``<service>.<partition>`` for a partition and
``members.<service>.<identity>`` for a live replica. A value is the identity of the replica that wrote
it. A key that has not been written for a TTL is *expired*: the store no longer reads it, and
:meth:`LeaseStore.create` may take it.

Values read from a store are untrusted, like any message: :func:`decode_value` turns a value that is not
an identity into ``None`` (counted in ``wva_messages_rejected_total{subject_kind="leases"}``).

Exceptions::

    Exception
    └── LeaseConflict    create on a live key, update or delete with a revision that is not the last
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

from shared.observability import count_rejected

log = logging.getLogger("wva.leases")

Revision: TypeAlias = int | str
"""What a store counts writes with: the bucket's sequence, or an object's resourceVersion."""

_IDENTITY_RE: Final = re.compile(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_MAX_VALUE: Final = 64


class LeaseConflict(Exception):
    """The key is live already (create), or was written since the revision given (update, delete)."""


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    holder: str | None  # None: not an identity
    revision: Revision


def is_identity(text: str) -> bool:
    return bool(_IDENTITY_RE.match(text))


def decode_value(value: bytes | None) -> str | None:
    """The identity a lease value names, or None (counted and logged) when it is not one."""
    raw = value or b""
    try:
        text = raw[: _MAX_VALUE + 1].decode()
    except UnicodeDecodeError:
        text = ""
    if len(raw) <= _MAX_VALUE and is_identity(text):
        return text
    count_rejected("leases", "invalid")
    log.warning("a lease value is not a replica identity (%d bytes); the key counts as held by nobody known", len(raw))
    return None


class LeaseStore(Protocol):
    """The operations of one round; any of them may raise whatever its client raises when the store
    cannot be reached (the round counts it and tries again)."""

    async def ensure(self) -> None:
        """Make the store usable (create the bucket); called at the start of every round."""

    def failed(self, exc: Exception) -> None:
        """A round failed with ``exc``: forget whatever it says is gone (the bucket), say what to fix."""

    async def create(self, key: str, value: str) -> Revision:
        """Write ``key`` if it is absent or expired; :class:`LeaseConflict` if it is live."""

    async def update(self, key: str, value: str, *, last: Revision) -> Revision:
        """Write ``key`` if ``last`` is still its revision; :class:`LeaseConflict` if not (or it is gone)."""

    async def delete(self, key: str, *, last: Revision) -> None:
        """Remove ``key`` if ``last`` is still its revision; :class:`LeaseConflict` if not."""

    async def get(self, key: str) -> Entry | None:
        """``key`` as it is now (None: absent or expired)."""

    async def read(self, service: str) -> dict[str, Entry]:
        """Every live key of ``service``: its partitions and its members."""
