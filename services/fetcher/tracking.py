"""Tracked targets: the VAs the fetcher collects for, as announced on ``wva.targets``.

Also remembers when each VA was last invalidated (monotonic time), so a collection that started
before an invalidation is not cached or published over the fresher one that follows it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.messages import Target, VAKey, va_key


class Tracker:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._targets: dict[VAKey, Target] = {}
        self._invalidated_at: dict[VAKey, float] = {}
        self._clock = clock

    def put(self, target: Target) -> bool:
        """Track or update a target; True when it is new or its content changed."""
        key = va_key(target.namespace, target.name)
        old = self._targets.get(key)
        self._targets[key] = target
        return old is None or _content(old) != _content(target)

    def remove(self, namespace: str, name: str) -> Target | None:
        key = va_key(namespace, name)
        self._invalidated_at.pop(key, None)
        return self._targets.pop(key, None)

    def get(self, namespace: str, name: str) -> Target | None:
        return self._targets.get(va_key(namespace, name))

    def all(self) -> list[Target]:
        return list(self._targets.values())

    def of_model(self, namespace: str, model_id: str) -> list[Target]:
        return [t for t in self._targets.values() if t.namespace == namespace and t.model_id == model_id]

    def mark_invalidated(self, namespace: str, name: str) -> float:
        now = self._clock()
        self._invalidated_at[va_key(namespace, name)] = now
        return now

    def invalidated_since(self, key: VAKey, started: float) -> bool:
        """Was this VA invalidated after a collection that started at ``started`` (monotonic)?"""
        at = self._invalidated_at.get(key)
        return at is not None and at >= started

    def now(self) -> float:
        return self._clock()

    def __len__(self) -> int:
        return len(self._targets)


def _content(target: Target) -> tuple[object, ...]:
    # The timestamp changes on every republish; identical content is a no-op.
    return tuple(getattr(target, f) for f in target.__struct_fields__ if f != "at")
