"""Checking a run's timeline against the scenario's `expectations` (pure).

Replica counts are the Deployments' `spec.replicas` as sampled from the emulated cluster: what the
scaler actually made happen, not what it intended.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.sandbox import observe, scenario


@dataclass(frozen=True, kw_only=True)
class Outcome:
    expectation: scenario.Expectation
    met: bool
    text: str  # "llama-cheap reaches >= 3 replicas: max 4"


def check(timeline: observe.Timeline, expected: list[scenario.Expectation]) -> list[Outcome]:
    """One outcome per stated bound (an expectation with two bounds gives two outcomes)."""
    outcomes: list[Outcome] = []
    for e in expected:
        series = [s.variants[e.variant].spec for s in timeline.samples if e.variant in s.variants]
        if not series:
            outcomes.append(
                Outcome(expectation=e, met=False, text=f"{e.variant}: no samples (the run ended early)")
            )
            continue
        peak, final = max(series), series[-1]
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
    return outcomes
