"""wva as a user installs it: the wheel in a fresh virtualenv outside the checkout runs
`wva sandbox --duration 20s --headless`, so everything the sandbox reads (the CRD, the scenarios and
their CSV traces) ships as package data, and nothing reaches back into the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def test_the_installed_wheel_runs_the_sandbox(tmp_path: Path) -> None:
    # Nothing of the checkout or of the development venv on the paths the installed wva sees.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    dev_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != dev_bin)
    wheels, home, cwd = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    cwd.mkdir()
    # pip's cache serves the build backend and the dependencies, so this takes seconds once warm.
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        cwd=cwd, env=env, timeout=120,
    )  # fmt: skip
    (wheel,) = wheels.glob("wva-*.whl")
    venv.create(home, with_pip=True, system_site_packages=False)
    python = home / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), f"wva[sandbox] @ {wheel.as_uri()}"],
        cwd=cwd, env=env, timeout=300,
    )  # fmt: skip
    where = _run([str(python), "-c", "import services; print(services.__file__)"], cwd=cwd, env=env, timeout=30)
    assert Path(where.stdout.strip()).is_relative_to(home), where.stdout

    run = _run(
        [str(home / "bin" / "wva"), "sandbox", "--duration", "20s", "--headless", "--run-dir", str(tmp_path / "run"),
         "--report", str(cwd / "report.html")],
        cwd=cwd, env=env, timeout=150,
    )  # fmt: skip
    out = run.stdout
    assert "scenario 'default' (20s of load)" in out
    assert "expectations not checked: --duration 20s is shorter than the story's 240s" in out
    assert "llm/Llama-3.1-8B-Instruct" in out  # the scaler's decisions reached the view
    assert "result: ok" in out
    assert (cwd / "report.html").read_text().count("<svg") == 5
