"""The lab's own scenarios: valid scenario files whose traffic has the documented shape, run on the
lab's default fleet unless --fleet says otherwise."""

from __future__ import annotations

import argparse

import pytest

from services.lab import command, traffic
from services.lab import fleet as fleets
from services.sandbox import scenario


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def _rate(arrivals: list[traffic.Arrival], start: float, end: float) -> float:
    return sum(1 for a in arrivals if start <= a.t < end) / (end - start)


@pytest.mark.parametrize("name", ["lab-spike", "lab-diurnal"])
def test_a_lab_scenario_runs_on_the_default_fleet(name: str) -> None:
    path = command.resolve_scenario(name)
    assert path.parent == command.LAB_SCENARIOS and path.exists()
    lab, _ = command.build_lab(_args("--scenario", name))
    assert lab.fleet == fleets.load_fleet(fleets.DEFAULT_FLEET)
    # Its variants name the fleet's, so the file stands on its own as a scenario.
    spec = scenario.load_scenario(path)
    assert [v.name for v in spec.models[0].variants] == [v.name for v in lab.fleet.variants]
    other = command.build_lab(
        _args("--scenario", name, "--fleet", str(fleets.FLEETS / "llama-8b-a100-h100.yaml"))
    )[0]
    assert other.fleet.model == "meta-llama/Llama-3.1-8B-Instruct"


def test_the_lab_spike_steps_from_10_to_25_requests_per_second_for_ten_minutes() -> None:
    lab, _ = command.build_lab(_args("--scenario", "lab-spike"))
    arrivals = list(lab.traffic.arrivals)
    assert lab.traffic.duration == 2400
    assert _rate(arrivals, 60, 900) == pytest.approx(10, rel=0.05)
    assert _rate(arrivals, 900, 1500) == pytest.approx(25, rel=0.05)
    assert _rate(arrivals, 1500, 2400) == pytest.approx(10, rel=0.05)


def test_the_lab_diurnal_wave_runs_from_4_to_24_requests_per_second_in_an_hour() -> None:
    lab, _ = command.build_lab(_args("--scenario", "lab-diurnal"))
    arrivals = list(lab.traffic.arrivals)
    assert lab.traffic.duration == 3600
    assert (
        _rate(arrivals, 0, 300) < 6 and _rate(arrivals, 1650, 1950) > 22 and _rate(arrivals, 3300, 3600) < 6
    )
