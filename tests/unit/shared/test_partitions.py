"""Partitions and the fair-share plan (docs/design.md §11), with the whole lease protocol played out
in memory: every member plays its rounds in turn, so joins and departures show what moves and how often."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from shared import partitions
from shared.partitions import fair_share, partition_of, plan


def test_a_group_has_one_partition_everywhere() -> None:
    assert partition_of("llm", "meta-llama/Llama-3.1-8B", 16) == zlib.crc32(b"llm/meta-llama/Llama-3.1-8B") % 16
    assert partition_of("llm", "a", 1) == 0
    spread = Counter(partition_of("ns", f"model-{i}", 16) for i in range(1600))
    assert set(spread) == set(range(16)) and max(spread.values()) < 3 * 100  # roughly even


@pytest.mark.parametrize(("total", "members", "share"), [(16, 1, 16), (16, 2, 8), (16, 3, 6), (16, 5, 4), (1, 3, 1), (16, 0, 16)])
def test_fair_share(total: int, members: int, share: int) -> None:
    assert fair_share(total, members) == share


def test_takes_free_partitions_up_to_its_share_most_wanted_first() -> None:
    names = partitions.numbered(16)
    moves = plan(identity="a", held={}, free=names, members=2, partitions=16, now=0.0, settle=1.0)
    assert len(moves.acquire) == 8 and not moves.release
    assert list(moves.acquire) == sorted(names, key=lambda p: partitions.preference("a", p), reverse=True)[:8]


def test_gives_back_only_what_it_held_a_whole_period() -> None:
    held = {str(p): 0.0 for p in range(8)} | {"8": 9.5, "9": 9.5}
    early = plan(identity="a", held=held, free=[], members=2, partitions=16, now=10.0, settle=1.0)
    assert set(early.release) <= set(partitions.numbered(8)) and len(early.release) == 2
    fresh = {str(p): 9.5 for p in range(10)}
    assert plan(identity="a", held=fresh, free=[], members=2, partitions=16, now=10.0, settle=1.0).release == ()


class _World:
    """The bucket and the members, played round by round (each member's round as leases.Leases does it)."""

    def __init__(self, total: int = 16) -> None:
        self.total = total
        self.holder: dict[str, str] = {}
        self.since: dict[str, float] = {}
        self.members: list[str] = []
        self.changes = 0
        self.unowned_rounds: Counter[str] = Counter()

    def round(self, member: str, now: float) -> None:
        held = {p: self.since[p] for p, h in self.holder.items() if h == member}
        free = [p for p in partitions.numbered(self.total) if p not in self.holder]
        moves = plan(identity=member, held=held, free=free, members=len(self.members), partitions=self.total, now=now, settle=1.0)
        for p in moves.release:
            del self.holder[p]
            self.changes += 1
        for p in moves.acquire:
            if p not in self.holder:
                self.holder[p], self.since[p] = member, now
                self.changes += 1

    def play(self, rounds: int, start: float) -> float:
        now = start
        for _ in range(rounds):
            for member in self.members:
                self.round(member, now)
            for p in partitions.numbered(self.total):
                if p not in self.holder:
                    self.unowned_rounds[p] += 1
            now += 1.0
        return now

    def counts(self) -> list[int]:
        return sorted(Counter(self.holder.values()).values())


def test_join_and_leave_move_each_partition_once_and_settle() -> None:
    world = _World()
    world.members = ["a", "b"]
    now = world.play(3, 0.0)
    assert world.counts() == [8, 8]
    world.changes = 0
    world.members.append("c")  # a third replica joins
    now = world.play(10, now)
    assert world.counts() == [4, 6, 6]
    # 4 released by a and b, 4 acquired by c: nothing moved twice, nothing moves any more
    assert world.changes == 8
    before = dict(world.holder)
    now = world.play(10, now)
    assert world.holder == before
    assert max(world.unowned_rounds.values(), default=0) <= 1  # released one round, taken the next
    world.changes = 0
    world.members.remove("c")  # it leaves: its leases expire (or it gives them back)
    for p in [p for p, h in world.holder.items() if h == "c"]:
        del world.holder[p]
    world.play(5, now)
    assert world.counts() == [8, 8]
    assert world.changes == 4  # the four that c held, each taken once
