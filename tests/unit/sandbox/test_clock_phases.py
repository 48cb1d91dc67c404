"""The sandbox says where its clocks fell (Prometheus' discovery ticks, the fetcher's cycles) in lines
the lab's replay of a live run reads back (tests/fixtures/lab.py, tests/e2e/test_lab_cross_check.py)."""

from __future__ import annotations

import pytest

from services.sandbox import session
from tests.fixtures.lab import Phases


def test_the_lines_the_sandbox_prints_are_the_phases_the_lab_replays() -> None:
    output = "\n".join([
        "nats:         nats://127.0.0.1:4222",
        session.discovery_line(-1.2),  # ready 1.2 s before the load began: ticks at 3.8, 8.8, …
        "t=  23.4s ci-cheap                1 -> 2  scale_up_required_capacity (applied)",
        session.fetch_line(23.43, 1.0),
    ])  # fmt: skip
    assert Phases.of_output(output) == Phases(discovery=pytest.approx(3.8), fetch=pytest.approx(0.43))


def test_an_output_without_them_is_an_error_not_the_default_timing() -> None:
    with pytest.raises(ValueError, match="discovery and fetch"):
        Phases.of_output("t=  23.4s ci-cheap 1 -> 2 scale_up_required_capacity (applied)\n")
