"""Scale-down pacing as Kubernetes' HPA does it (docs/algorithms.md, "Scale-down pacing").

The analyzer's recommendation (a count per variant) is remembered over the last
``scaleDownStabilizationSeconds``; a variant gets the highest count recommended for it within that
window, so a decrease happens only once it has been recommended for the whole window, and then by as
much as the window allows. Scale-up is never delayed (the highest includes the newest).

Until the memory covers a whole window (after a start, or a take-over) nothing is known about the
earlier part of it, so the count a variant already has stands in for it: a fresh scaler delays a
scale-down, it never speeds one up.

Only *changes* of the recommendation are stored, each at the instant the core published a decision
for it, so a replay rebuilds the same memory from the recorded decisions.

A replica that takes a group over from another (docs/design.md §11) restores the memory from the last
decision of each of the group's variants (:meth:`Pacing.restored`): a decision is published whenever
a variant's recommendation changes, so the latest of them says what was recommended since then.
Before it, the count a variant has stands in, as after a start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from services.scaler.analyzers.saturation import EPSILON
from shared.interning import Interner
from shared.messages import Decision

Names = tuple[str, ...]  # variants, sorted
Counts = tuple[int, ...]  # a count per variant of its Names
_shared: Final[Interner[Counts]] = Interner()  # one tuple per distinct counts (most groups have a handful)


class LastDecision(NamedTuple):
    """What a take-over needs of a variant's last decision on the stream (kept for every VA: small)."""

    name: str
    at: float
    model_id: str
    recommended: int | None

    @classmethod
    def of(cls, decision: Decision) -> LastDecision:
        return cls(decision.name, decision.at.timestamp(), decision.model_id, decision.numbers.recommended)


@dataclass(slots=True)
class Pacing:
    since: float | None = None  # first recommendation remembered
    # (when, variants, counts): the variants' tuple shared with the change before while they stay the
    # same, equal counts one tuple (docs/benchmarks.md, "Memory per tracked VA")
    changes: list[tuple[float, Names, Counts]] = field(default_factory=list)

    @classmethod
    def restored(cls, last: Sequence[LastDecision | None], model_id: str, now: float) -> Pacing:
        """The memory the last decisions of a group's variants (one each, in any order) leave: empty
        unless every variant has one of this model with its recommendation."""
        pacing = cls()
        known = [d for d in last if d is not None and d.model_id == model_id and d.recommended is not None]
        if known and len(known) == len(last):
            since = min(now, max(d.at for d in known))
            pacing.remember(since, {d.name: d.recommended or 0 for d in known})
        return pacing

    def remember(self, now: float, recommended: Mapping[str, int]) -> None:
        items = sorted(recommended.items())
        names, counts = tuple(n for n, _ in items), tuple(c for _, c in items)
        if self.since is None:
            self.since = now
        if self.changes:
            _, last_names, last_counts = self.changes[-1]
            if last_names == names:
                if last_counts == counts:
                    return
                names = last_names
        self.changes.append((now, names, _shared(counts)))

    def forget_before(self, cutoff: float) -> None:
        """Drop changes no window ending at or after ``cutoff + window`` can see (all but the one in
        force at ``cutoff``)."""
        keep = 0
        for i, (when, _, _) in enumerate(self.changes):
            if when <= cutoff + EPSILON:
                keep = i
        del self.changes[:keep]

    def highest(self, now: float, window: float, current: Mapping[str, int]) -> dict[str, int]:
        """Per variant, the highest count recommended in ``[now - window, now]`` (``current`` stands in
        for what the memory does not cover)."""
        start = now - window
        result: dict[str, int] = {}
        if self.since is None or self.since > start + EPSILON:
            result.update(current)
        in_force: tuple[Names, Counts] | None = None
        for when, names, counts in self.changes:
            if when <= start + EPSILON:
                in_force = (names, counts)
                continue
            _raise(result, names, counts)
        if in_force is not None:
            _raise(result, *in_force)
        return result

    def lower_since(self, now: float, variant: str, count: int) -> float:
        """Since when ``variant`` has been recommended at most ``count`` without a break (``now`` if
        it is not now)."""
        since = now
        for when, names, counts in reversed(self.changes):
            if dict(zip(names, counts, strict=True)).get(variant, 0) > count:
                break
            since = when
        return since


def _raise(result: dict[str, int], names: Names, counts: Counts) -> None:
    for name, n in zip(names, counts, strict=True):
        result[name] = max(result.get(name, n), n)

