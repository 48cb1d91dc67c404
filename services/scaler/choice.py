"""Cost-aware choice of variant and step distribution (docs/algorithms.md, V1 steps 5-6)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Variant:
    """One variant of a model group as the choice sees it."""

    name: str
    cost: float
    min_replicas: int
    max_replicas: int | None  # None: no upper bound
    current: int
    # Paused (or dry-run) variants are still decided, but a step goes to one that will act when
    # any can: otherwise a paused cheapest variant would stall its whole group under load.
    frozen: bool = False

    def room(self) -> int | None:
        """How many replicas may still be added (None: unlimited)."""
        if self.max_replicas is None:
            return None
        return max(0, self.max_replicas - self.current)


def _cheapest_first(variants: Sequence[Variant]) -> list[Variant]:
    return sorted(variants, key=lambda v: (v.frozen, v.cost, v.name))


def distribute_scale_up(variants: Sequence[Variant], step: int) -> dict[str, int]:
    """Replicas to add per variant: cheapest first (ties by lowest name), each within its maxReplicas.

    The result may add fewer than ``step`` (or nothing) when the variants are at their bounds.
    """
    added: dict[str, int] = {}
    remaining = step
    for variant in _cheapest_first(variants):
        if remaining <= 0:
            break
        room = variant.room()
        take = remaining if room is None else min(remaining, room)
        if take > 0:
            added[variant.name] = take
            remaining -= take
    return added


def distribute_scale_down(variants: Sequence[Variant], count: int) -> dict[str, int]:
    """Replicas to remove per variant: the most expensive first (ties by highest name), variants that
    will act (not frozen) before frozen ones, each down to ``max(minReplicas, 1)`` at most."""
    removed: dict[str, int] = {}
    remaining = count
    for variant in sorted(variants, key=lambda v: (not v.frozen, v.cost, v.name), reverse=True):
        if remaining <= 0:
            break
        take = min(remaining, variant.current - max(variant.min_replicas, 1))
        if take > 0:
            removed[variant.name] = take
            remaining -= take
    return removed


def cheapest(variants: Sequence[Variant]) -> Variant | None:
    """The cheapest variant (ties by lowest name) that may run at least one replica."""
    for variant in _cheapest_first(variants):
        if variant.max_replicas is None or variant.max_replicas >= 1:
            return variant
    return None
