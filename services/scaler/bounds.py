"""Bounds: every variant within ``[minReplicas, maxReplicas]``, and a group never at zero unless
scale-to-zero is enabled (docs/algorithms.md, "Stability and safety", "Scale to zero").

Applied only to a decision the core could make: while a group holds, an out-of-bounds spec is
reported in the VA's condition and left alone (holding means resizing nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.scaler import choice


def clamp(replicas: int, min_replicas: int, max_replicas: int | None) -> int:
    """``replicas`` within ``[min_replicas, max_replicas]`` (a max below the min yields the min)."""
    if max_replicas is not None and replicas > max_replicas:
        replicas = max_replicas
    return max(replicas, min_replicas)


def outside(replicas: int, min_replicas: int, max_replicas: int | None) -> bool:
    return clamp(replicas, min_replicas, max_replicas) != replicas


def apply(desired: Sequence[int], variants: Sequence[choice.Variant], *, zero_allowed: bool) -> list[tuple[int, str]]:
    """Each count within its variant's bounds, with why it moved: "" (it did not), ``"bounds"`` or
    ``"floor"`` (the cheapest variant keeps one replica of a group that would otherwise be at zero)."""
    out = [
        (bounded, "" if bounded == want else "bounds")
        for want, v in zip(desired, variants, strict=True)
        for bounded in (clamp(want, v.min_replicas, v.max_replicas),)
    ]
    if not zero_allowed and sum(n for n, _ in out) == 0:
        first = choice.cheapest(variants)
        if first is not None:
            out[variants.index(first)] = (1, "floor")
    return out
