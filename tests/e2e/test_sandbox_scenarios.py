"""The first minutes of the shipped scenarios that do not run whole in `make test` (they last four
minutes each), live: the real pipeline, Prometheus, the emulated cluster. Their whole stories are
recomputed (tests/unit/sandbox/test_timelines.py) and simulated with the production core
(tests/unit/sandbox/test_stories.py); `make demo` runs the default one whole."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.sandbox.arrivals import AZURE_ATTRIBUTION
from services.sandbox.servers import PROMETHEUS_INSTALL_HINT
from tests.fixtures.binaries import require_binary
from tests.fixtures.sandbox import run_sandbox

pytestmark = pytest.mark.slow

APPLIED = re.compile(r"^t=\s*([\d.]+)s (\S+)\s+(\d+) -> (\d+)\s+\S+ \(applied\)", re.MULTILINE)


def _changes(output: str, variant: str) -> list[tuple[float, int, int]]:
    return [(float(t), int(a), int(b)) for t, name, a, b in APPLIED.findall(output) if name == variant]


@pytest.mark.timeout(150)
def test_the_trace_scenario_replays_the_azure_trace_with_its_attribution(tmp_path: Path) -> None:
    require_binary("prometheus", PROMETHEUS_INSTALL_HINT)
    run = run_sandbox(tmp_path, "--duration", "30s", scenario="trace", timeout=120)
    assert run.returncode == 0, run.output
    # The licence (CC-BY 4.0) asks for the attribution wherever results on the trace are shown.
    assert run.output.count(AZURE_ATTRIBUTION) == 2, run.output  # when it starts, and in the summary
    assert "Splitwise" in run.report.read_text()
    # 11.8 req/s in its first minute: the cheap variant grows at once, the expensive one never.
    ups = _changes(run.output, "trace-cheap")
    assert ups and ups[0][1] == 1 and ups[0][2] >= 2 and ups[0][0] < 20, run.output
    assert not _changes(run.output, "trace-expensive"), run.output


@pytest.mark.timeout(180)
def test_the_cold_start_scenario_adds_no_replicas_while_its_new_pods_boot(tmp_path: Path) -> None:
    require_binary("prometheus", PROMETHEUS_INSTALL_HINT)
    step_at, lag = 20.0, 20.0  # cold-start.yaml: the step, and rate window + scrape + fetch + reconcile
    # New pods take 60 s: the first 80 s show the scale-up and most of the boot.
    run = run_sandbox(tmp_path, "--duration", "80s", scenario="cold-start", timeout=160)
    assert run.returncode == 0, run.output
    ups = _changes(run.output, "cold-cheap")
    assert ups, run.output
    assert step_at < ups[0][0] <= step_at + lag + 5, run.output  # a little latency on a busy machine
    # The additions come while the measured rate climbs to the step (a lag) and the latency fit
    # settles (another); then the pods on their way count as supply: none more while they boot, where
    # an autoscaler counting Ready pods only would add on every evaluation, up to its 16.
    assert all(t <= step_at + 2 * lag and after > before for t, before, after in ups), run.output
    assert max(after for _, _, after in ups) <= 8, run.output
    assert not _changes(run.output, "cold-expensive"), run.output
