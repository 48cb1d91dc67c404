"""Every shipped scenario's story, simulated: the production scaler core (default configuration) on the
scenario's requests in the decision lab, as the live sandbox runs them (tests/fixtures/lab.py), must
meet the scenario's expectations — on its own seed and on others, so a story holds by construction
and not for one lucky draw of arrivals. The live runs (tests/e2e) check the real pipeline; the lab's
agreement with it is cross-checked in tests/e2e/test_lab_cross_check.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.sandbox import expectations, scenario
from tests.fixtures.lab import simulate_as_in_the_sandbox, spec_series

SCENARIOS = Path(scenario.__file__).parent / "scenarios"
OTHER_SEEDS = 4  # besides the scenario's own


def _stories() -> list[tuple[str, int]]:
    cases = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        spec = scenario.load_scenario(path)
        if spec.expectations:
            cases += [(path.stem, spec.seed + k) for k in range(1 + OTHER_SEEDS)]
    return cases


@pytest.mark.parametrize(("name", "seed"), _stories(), ids=lambda v: str(v))
def test_a_shipped_story_holds_in_simulation(name: str, seed: int) -> None:
    spec = scenario.load_scenario(SCENARIOS / f"{name}.yaml")
    run = simulate_as_in_the_sandbox(spec, seed=seed)
    outcomes = expectations.check_series(spec_series(run), spec.expectations)
    scalings = [f"{s.t:.0f}s {s.variant} {s.before}->{s.after}" for s in run.scalings]
    assert all(o.met for o in outcomes), "\n".join([*(o.text for o in outcomes if not o.met), *scalings])


def test_the_stories_are_those_of_every_scenario_with_expectations() -> None:
    names = {name for name, _ in _stories()}
    assert {"default", "ci", "spike"} <= names
