"""static-peak: a fixed replica count per variant that meets the SLO at the trace's peak (docs/lab.md).

The mix is the oracle's costliest window mix (`oracle.peak_mix`): the cheapest mix under which every
request of the most demanding window meets the SLO, simulated alone. It is Ready from the start and
never changes: what a team that provisions for the peak pays, and the attainment it gets elsewhere
(a burst inside a quieter window can still miss).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.lab import fleet as fleets
from services.lab.policies.base import Sim
from services.lab.traffic import Traffic


class Static:
    """A fixed mix, Ready from the start; never scales."""

    observes = False

    def __init__(self, name: str, mix: Mapping[str, int]) -> None:
        self.name = name
        self.mix = dict(mix)

    def initial(self, fleet: fleets.Fleet, traffic: Traffic) -> Mapping[str, int] | None:
        return self.mix

    def start(self, sim: Sim) -> None:
        return None
