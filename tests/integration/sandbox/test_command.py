"""`wva sandbox --no-services` runs the emulated cluster until SIGTERM, then stops everything."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from services.sandbox import cluster, command
from tests.fixtures.sandbox import FAST_SCENARIO


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


async def test_runs_the_cluster_until_sigterm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig, sd = tmp_path / "kubeconfig", tmp_path / "targets.json"
    args = parse("--no-services", "--scenario", "small", "--no-load",
                 "--kubeconfig-out", str(kubeconfig), "--prometheus-sd-out", str(sd))  # fmt: skip
    task = asyncio.create_task(command.serve(args))
    async with asyncio.timeout(10):
        while not (sd.exists() and len(json.loads(sd.read_text())) == 2):
            assert not task.done(), task
            await asyncio.sleep(0.05)
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    assert server.startswith("http://127.0.0.1:")
    os.kill(os.getpid(), signal.SIGTERM)  # the command's handler turns it into a clean stop
    async with asyncio.timeout(10):
        assert await task == 0
    out = capsys.readouterr().out
    assert f"kube API:     {server}" in out
    assert out.count("/metrics (meta-llama/Llama-3.1-8B-Instruct, ready)") == 2
    assert "load: none (--no-load)" in out
    assert out.rstrip().endswith("stopped")
    assert json.loads(sd.read_text()) == []  # nothing left to scrape


async def test_with_services_a_bad_interval_is_reported_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    # The whole run (services included) is tested in tests/e2e.
    assert await command.serve(parse("--fetch-interval", "soon")) == 2
    assert "--fetch-interval" in capsys.readouterr().err


async def test_with_services_a_bad_scenario_is_reported_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nduration: 1\nnamespaces: [llm]\nmodels: []\n")
    assert await command.serve(parse("--scenario", str(bad), "--run-dir", str(tmp_path / "run"))) == 2
    assert "bad.yaml: models: at least one model is needed" in capsys.readouterr().err


async def test_bad_scenario_is_reported_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nduration: 1\nnamespaces: [llm]\nmodels: []\n")
    args = parse("--no-services", "--scenario", str(bad), "--kubeconfig-out", str(tmp_path / "k"),
                 "--prometheus-sd-out", str(tmp_path / "sd.json"))  # fmt: skip
    assert await command.serve(args) == 2
    assert "bad.yaml: models: at least one model is needed" in capsys.readouterr().err


async def test_run_cluster_plays_the_load_then_idles_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(FAST_SCENARIO.replace("duration: 30", "duration: 1"))
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        cluster.run_cluster(
            path,
            kubeconfig_out=tmp_path / "k",
            prometheus_sd_out=tmp_path / "sd.json",
            stop=stop,
            announce=lines.append,
        )
    )
    async with asyncio.timeout(10):
        while not any(line.startswith("load done") for line in lines):
            assert not task.done(), task
            await asyncio.sleep(0.05)
    (done,) = [line for line in lines if line.startswith("load done")]
    sent = int(done.split("sent ")[1].split(",")[0])
    assert 20 <= sent <= 65  # 40 req/s for one second, Poisson
    assert done.endswith("not served 0")
    assert not task.done()  # the cluster outlives its load, for watching the scale-down
    stop.set()
    async with asyncio.timeout(10):
        assert await task == 0
    assert lines[-1] == "stopped"
