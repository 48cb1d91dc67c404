"""What the core keeps per VA, which benchmark 5 (bench/memory.py) measures: no duplicate of what a
decoded message repeats, nothing allocated for what has not happened yet."""

from __future__ import annotations

from services.scaler.core import Scaler
from shared import messages

from .builders import NS, decisions, feed, snapshot, target


def _wire(message: messages.Target) -> messages.Target:
    decoded = messages.targets_decoder.decode(messages.encode(message))  # its own copies of every string
    assert isinstance(decoded, messages.Target)
    return decoded


def test_targets_are_kept_with_their_repeated_strings_shared() -> None:
    s = Scaler()
    feed(s, [(0, _wire(target("a", cost=40))), (0, _wire(target("b", cost=80)))])
    actions = feed(s, [(0, snapshot("a", [0.79], at=0)), (0, snapshot("b", [0.5], at=0))])
    a, b = (next(d for d in decisions(actions) if d.name == n) for n in ("a", "b"))
    assert a.namespace == NS and a.namespace is b.namespace and a.model_id is b.model_id
