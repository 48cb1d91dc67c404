"""`wva sandbox` end to end: the ci scenario meets its expectations through Prometheus and through the
scrape backend, writes a self-contained report, and leaves no process behind, even when interrupted."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.sandbox import SandboxRun, read_pids, running, sandbox_command

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # with the shared recorded run: alone, not beside other tests


def _no_process_left(run_dir: Path) -> None:
    pids = read_pids(run_dir)
    names = {name for _, name in pids}
    assert {"nats-server", "watcher", "fetcher", "scaler"} <= names
    left = [(pid, name) for pid, name in pids if running(pid)]
    assert not left, f"still running after the sandbox exited: {left}"


def _assert_story(run: SandboxRun) -> None:
    assert run.returncode == 0, run.output
    assert "result: ok" in run.output
    for expectation in (
        "ci-cheap reaches >= 2",
        "ci-expensive never exceeds 2",
        "ci-expensive ends with <= 1",
    ):
        assert f"[ok] {expectation}" in run.output
    # One line per decision without a terminal, with the scale-down of the expensive variant and
    # the scale-up of the cheap one among them.
    assert re.search(r"ci-expensive\s+2 -> 1\s+scale_down_spare_capacity \(applied\)", run.output), run.output
    assert re.search(r"ci-cheap\s+1 -> ([2-9]|10)\s+scale_up_\w+ \(applied\)", run.output), run.output
    _no_process_left(run.run_dir)


@pytest.mark.timeout(200)
def test_ci_scenario_through_prometheus(recorded_sandbox_run: SandboxRun) -> None:
    run = recorded_sandbox_run
    assert "collector: prometheus" in run.output
    _assert_story(run)
    html = run.report.read_text()
    assert html.count("<svg") == 5  # load, replicas, KV, queue, TTFT
    assert "<script" not in html and "src=" not in html and "href=" not in html  # nothing to fetch
    assert "scale_down_spare_capacity" in html


@pytest.mark.timeout(200)
def test_ci_scenario_through_the_scrape_backend_without_prometheus(scrape_sandbox_run: SandboxRun) -> None:
    run = scrape_sandbox_run
    assert "collector: scrape (no `prometheus` on PATH)" in run.output
    _assert_story(run)
    assert not (run.run_dir / "prometheus").exists()


@pytest.mark.timeout(120)
def test_interrupt_stops_every_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    output = b""
    # The context manager closes the pipe whatever happens, so a failure shows as itself, not as an
    # unclosed-file error on top of it.
    with subprocess.Popen(
        sandbox_command(run_dir, "--duration", "60s"),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            while b"scaler:" not in output and time.monotonic() < deadline:  # every service is ready
                line = proc.stdout.readline()
                if not line:
                    break
                output += line
            assert b"scaler:" in output, output.decode(errors="replace")
            time.sleep(3)  # load is playing
            down = [(pid, name) for pid, name in read_pids(run_dir) if not running(pid)]
            assert not down, f"exited before the interrupt: {down}\n{output.decode(errors='replace')}"
            proc.send_signal(signal.SIGINT)
            rest, _ = proc.communicate(timeout=40)
            output += rest
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = output.decode(errors="replace")
    assert proc.returncode == 130, text
    assert b"interrupted" in output, text
    _no_process_left(run_dir)
    assert (run_dir / "report.html").exists()  # a cut-short run still reports what it saw
