"""Partitions of the work that replicas of one service share (docs/design.md §11) — no I/O here.

- A model group (namespace, modelID) belongs to partition ``crc32("<namespace>/<modelID>") mod N``
  (``WVA_PARTITIONS``): the scaler decides per group, so a whole group stays with one replica. Every
  replica of every service computes the same partition for the same group.
- The watcher's work cannot be split: it is one partition of its own, :data:`WATCHER`.
- :func:`plan` is what a replica does with the leases in one round: aim for its fair share
  ``ceil(partitions / members)``, take free partitions up to it, and give back what it holds above it
  — but only partitions it has held for a whole renewal period (``settle``), so a partition is not
  handed back and forth while members come and go. Replicas prefer different partitions (rendezvous
  hashing on their identity), so several of them rarely reach for the same free one at once.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

WATCHER: Final = "watcher"
"""The watcher's only partition: one watcher publishes at a time."""


def partition_of(namespace: str, model_id: str, partitions: int) -> int:
    """The partition of the model group ``(namespace, model_id)`` among ``partitions``."""
    return zlib.crc32(f"{namespace}/{model_id}".encode()) % partitions


def numbered(partitions: int) -> tuple[str, ...]:
    """The names of ``partitions`` numbered partitions: ``"0"`` … ``"N-1"``."""
    return tuple(str(p) for p in range(partitions))


def fair_share(partitions: int, members: int) -> int:
    """How many partitions one of ``members`` live replicas aims to hold."""
    return math.ceil(partitions / max(1, members))


def preference(identity: str, partition: str) -> int:
    """How much ``identity`` wants ``partition`` (rendezvous hashing: higher first)."""
    return int.from_bytes(hashlib.blake2b(f"{identity}/{partition}".encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Plan:
    acquire: tuple[str, ...]  # free partitions to try to take, most wanted first
    release: tuple[str, ...]  # held partitions to give back


def plan(
    *,
    identity: str,
    held: Mapping[str, float],
    free: Sequence[str],
    members: int,
    partitions: int,
    now: float,
    settle: float,
) -> Plan:
    """One round's moves for ``identity``, which holds ``held`` (partition -> since when) while
    ``free`` are held by nobody and ``members`` replicas (itself included) are alive."""
    share = fair_share(partitions, members)

    def wanted(p: str) -> int:
        return preference(identity, p)

    if len(held) < share:
        return Plan(acquire=tuple(sorted(free, key=wanted, reverse=True)[: share - len(held)]), release=())
    settled = [p for p, since in held.items() if now - since >= settle]
    extra = len(held) - share
    return Plan(acquire=(), release=tuple(sorted(settled, key=wanted)[:extra]) if extra > 0 else ())
