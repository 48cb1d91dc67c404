"""What the core keeps per VA, which benchmark 5 (bench/memory.py) measures: no duplicate of what a
decoded message repeats, nothing allocated for what has not happened yet."""

from __future__ import annotations

import msgspec

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


def test_the_slo_memory_keeps_the_last_points_in_order_and_nothing_for_a_variant_without_any() -> None:
    from services.scaler.analyzers.slo import POINTS, SloMemory
    from services.scaler.digest import digest

    from .test_slo import itl, wire

    memory = SloMemory()
    memory.observe("idle", digest(wire("idle", [0.0, 0.0]), received_at=0))  # no tokens generated: no point
    assert memory.points == {}
    loads = [100.0 + i for i in range(3 * POINTS // 2)]  # more than the memory holds: it wraps
    for i in range(0, len(loads), 3):
        memory.observe("a", digest(wire("a", loads[i : i + 3]), received_at=0))
    kept = loads[-POINTS:]
    assert memory.points["a"].pairs() == [(x, itl(x)) for x in kept]
    # The fit over the wrapped memory is the fit over those points in that order, bit for bit.
    fresh = SloMemory()
    for i in range(0, POINTS, 2):
        fresh.observe("a", digest(wire("a", kept[i : i + 2]), received_at=0))
    assert memory.fit("a", 0.1) == fresh.fit("a", 0.1)


def test_what_many_vas_have_in_common_is_one_object() -> None:
    from services.scaler import holds, reasons
    from services.scaler.actions import StatusAction

    from .builders import statuses

    s = Scaler()
    feed(s, [(0, target("a", cost=40)), (0, target("b", cost=80))])
    actions = feed(s, [(5, snapshot("a", [0.5], at=5))]) + feed(s, [(5, snapshot("b", [0.5], at=5))])
    a, b = (next(d for d in decisions(actions) if d.name == n) for n in ("a", "b"))
    assert a.cursor == b.cursor and a.cursor is b.cursor  # decided at the same stream positions
    stamps = [
        c.last_transition_time
        for st in statuses(actions)
        if isinstance(st, StatusAction)
        for c in st.status.conditions
    ]
    assert len(stamps) > 2 and len({id(t) for t in stamps if t == stamps[0]}) == 1  # one string per instant
    ok = holds.condition(
        reasons.METRICS_AVAILABLE, True, reasons.METRICS_FOUND, "saturation metrics are available"
    )
    assert ok is holds.condition(
        reasons.METRICS_AVAILABLE, True, reasons.METRICS_FOUND, "saturation metrics are available"
    )


def test_a_digest_keeps_the_targets_pod_names_and_is_not_tracked_by_the_garbage_collector() -> None:
    import gc

    from services.scaler.digest import digest

    sent = snapshot("a", [0.5, 0.6], at=0)
    sent = msgspec.structs.replace(
        sent,
        replicas=tuple(msgspec.structs.replace(r, num_gpu_blocks=1024, block_size=16) for r in sent.replicas),
    )
    wired = messages.metrics_decoder.decode(messages.encode(sent))  # each replica with its own 16384
    assert isinstance(wired, messages.MetricsSnapshot)
    names = {r.pod: "".join(r.pod) for r in wired.replicas}  # the Target's own strings
    d = digest(wired, received_at=0, names=names)
    assert [r.pod for r in d.replicas] == [r.pod for r in wired.replicas]
    assert all(r.pod is names[r.pod] for r in d.replicas)
    assert not gc.is_tracked(d) and not any(gc.is_tracked(r) for r in d.replicas)
    assert d.replicas[0].cache_tokens == 16384 and d.replicas[0].cache_tokens is d.replicas[1].cache_tokens
