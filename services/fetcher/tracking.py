"""Tracked targets: the VAs the fetcher collects for, as announced on ``wva.targets``.

Also remembers, per tracked VA only (a deleted VA leaves nothing behind):

- when it was last invalidated (monotonic time), so a collection that started before an invalidation
  is not cached or published over the fresher one that follows it;
- the Deployment generation an invalidation announced when it is newer than the tracked Target's: the
  refresh waits for the Target of that generation (docs/design.md §4), so the snapshot that follows a
  change describes the changed Deployment and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.messages import Target, VAKey, interned, same_content, va_key


class Tracker:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._targets: dict[VAKey, Target] = {}
        self._invalidated_at: dict[VAKey, float] = {}
        self._awaiting: dict[VAKey, int] = {}
        self._clock = clock

    def put(self, target: Target) -> bool:
        """Track or update a target (kept with its repeated strings shared); True when it is new or its
        content changed."""
        target = interned(target)
        key = va_key(target.namespace, target.name)
        old = self._targets.get(key)
        self._targets[key] = target
        return not same_content(old, target)

    def remove(self, namespace: str, name: str) -> Target | None:
        key = va_key(namespace, name)
        self._invalidated_at.pop(key, None)
        self._awaiting.pop(key, None)
        return self._targets.pop(key, None)

    def get(self, namespace: str, name: str) -> Target | None:
        return self._targets.get(va_key(namespace, name))

    def all(self) -> list[Target]:
        return list(self._targets.values())

    def mark_invalidated(self, namespace: str, name: str, *, generation: int = 0) -> bool:
        """Note an invalidation of a tracked VA; True when its refresh can run now, False when it must
        wait for a Target of ``generation`` (or when the VA is not tracked: nothing to refresh)."""
        key = va_key(namespace, name)
        target = self._targets.get(key)
        if target is None:
            return False
        self._invalidated_at[key] = self._clock()
        if generation > target.deployment_generation:
            self._awaiting[key] = max(generation, self._awaiting.get(key, 0))
            return False
        return True

    def awaiting(self, key: VAKey) -> int | None:
        """The generation the VA's refresh waits for, if it waits."""
        return self._awaiting.get(key)

    def release(self, target: Target) -> bool:
        """True when ``target`` is the one a deferred refresh waited for (which then may run)."""
        key = va_key(target.namespace, target.name)
        waited = self._awaiting.get(key)
        if waited is None or target.deployment_generation < waited:
            return False
        del self._awaiting[key]
        return True

    def invalidated_since(self, key: VAKey, started: float) -> bool:
        """Was this VA invalidated after a collection that started at ``started`` (monotonic)?"""
        at = self._invalidated_at.get(key)
        return at is not None and at >= started

    def now(self) -> float:
        return self._clock()

    def __len__(self) -> int:
        return len(self._targets)

    def entries(self) -> int:
        """Per-VA entries held, all maps together (a deleted VA must leave none)."""
        return len(self._targets) + len(self._invalidated_at) + len(self._awaiting)
