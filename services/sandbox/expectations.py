"""Checking a run's timeline against the scenario's `expectations` (pure).

Replica counts are the Deployments' `spec.replicas` as sampled from the emulated cluster: what the
scaler actually made happen, not what it intended. A scale-up is an increase between two samples (a
step of several replicas counts once).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.sandbox import observe, scenario


@dataclass(frozen=True, kw_only=True)
class Outcome:
    expectation: scenario.Expectation
    met: bool
    text: str  # "llama-cheap reaches >= 3 replicas: max 4"


def check(timeline: observe.Timeline, expected: list[scenario.Expectation]) -> list[Outcome]:
    """One outcome per stated bound (an expectation with two bounds gives two outcomes)."""
    series: dict[str, list[int]] = {}
    for sample in timeline.samples:
        for name, point in sample.variants.items():
            series.setdefault(name, []).append(point.spec)
    return check_series(series, expected)


def check_series(series: Mapping[str, Sequence[int]], expected: list[scenario.Expectation]) -> list[Outcome]:
    """The same, from each variant's ``spec.replicas`` sampled over the run (oldest first): what the
    live sandbox observed, or what the decision lab simulated."""
    outcomes: list[Outcome] = []
    for e in expected:
        counts = series.get(e.variant, ())
        if not counts:
            outcomes.append(
                Outcome(expectation=e, met=False, text=f"{e.variant}: no samples (the run ended early)")
            )
            continue
        peak, final = max(counts), counts[-1]
        ups = sum(1 for before, after in itertools.pairwise(counts) if after > before)
        bounds = (
            (e.min_replicas_reached, "reaches >=", "max", peak, peak >= (e.min_replicas_reached or 0)),
            (
                e.max_replicas_reached_at_most,
                "never exceeds",
                "max",
                peak,
                peak <= (e.max_replicas_reached_at_most or 0),
            ),
            (
                e.final_replicas_at_most,
                "ends with <=",
                "final",
                final,
                final <= (e.final_replicas_at_most or 0),
            ),
            (
                e.final_replicas_at_least,
                "ends with >=",
                "final",
                final,
                final >= (e.final_replicas_at_least or 0),
            ),
        )
        for bound, words, label, seen, met in bounds:
            if bound is not None:
                outcomes.append(
                    Outcome(
                        expectation=e, met=met, text=f"{e.variant} {words} {bound} replicas: {label} {seen}"
                    )
                )
        if e.scale_ups_at_most is not None:
            outcomes.append(
                Outcome(
                    expectation=e,
                    met=ups <= e.scale_ups_at_most,
                    text=f"{e.variant} is scaled up at most {e.scale_ups_at_most} times: ups {ups}",
                )
            )
    return outcomes
