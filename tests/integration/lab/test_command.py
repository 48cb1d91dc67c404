"""`wva lab` as users run it: the smoke lab (10 simulated minutes of the Azure trace, two policies),
byte-identical JSON whatever the number of worker processes, the attribution wherever results on the
trace are shown, and a clear error (exit 2) for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _lab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "lab", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(150)
def test_smoke_lab_ten_simulated_minutes_two_policies(tmp_path: Path) -> None:
    result = _lab("--trace", "azure-conv", "--window", "10m", "--policy", "wva", "--policy", "hpa-kv",
                  "--out", str(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "wva lab: trace azure-llm-inference-2023-conv.csv, 600 s simulated" in out
    for policy in ("wva", "hpa-kv"):
        assert f"│ {policy} " in out
    assert "CC-BY 4.0" in out and "Splitwise" in out  # the table's caption
    document = json.loads((tmp_path / "lab.json").read_text())
    assert [p["policy"] for p in document["policies"]] == ["wva", "hpa-kv"]
    assert "Splitwise" in document["attribution"]
    assert document["traffic"]["duration"] == 600.0 and document["traffic"]["requests"] > 2500
    for p in document["policies"]:
        assert 0.0 <= p["attainment"] <= 1.0 and p["gpu_cost"] > 0
        assert p["served"] + p["failed_total"] == document["traffic"]["requests"]
    html = (tmp_path / "lab-report.html").read_text()
    assert "Splitwise" in html and html.count("<svg") == 5  # load, 2 x replicas, TTFT, cost vs attainment
    assert "<script" not in html and "src=" not in html
    assert "x real time" in result.stderr  # the simulated-to-wall-clock ratio


@pytest.mark.timeout(200)
def test_same_inputs_give_byte_identical_json_whatever_the_processes(tmp_path: Path) -> None:
    args = ["--trace", "azure-conv", "--rate-scale", "12", "--window", "100s+60s", "--oracle-window", "30s",
            "--policy", "wva", "--policy", "keda-queue", "--policy", "oracle"]  # fmt: skip
    one = _lab(*args, "--jobs", "1", "--out", str(tmp_path / "one"))
    two = _lab(*args, "--jobs", "2", "--out", str(tmp_path / "two"))
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    first = (tmp_path / "one" / "lab.json").read_bytes()
    assert first == (tmp_path / "two" / "lab.json").read_bytes()
    assert json.loads(first)["oracle_plan"]["mixes"]  # the oracle ran (and planned in parallel once)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "hpa-cpu"], "unknown policy 'hpa-cpu'"),
        (["--rate-scale", "0"], "rate scale must be a positive number"),
        (["--window", "ten minutes"], "--window: invalid duration"),
        (["--slo-ttft", "0s"], "--slo-ttft: must be > 0"),
        (["--scenario", "no-such-scenario"], "no-such-scenario.yaml: cannot read"),
        (["--trace", "/no/such/trace.csv"], "/no/such/trace.csv: cannot read"),
    ],
)
def test_bad_input_is_a_clear_error(args: list[str], message: str) -> None:
    result = _lab(*args, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_oracle_over_too_many_mixes_is_refused_up_front(tmp_path: Path) -> None:
    fleet = tmp_path / "huge.yaml"
    fleet.write_text(
        "model: m\nvariants:\n"
        + "".join(f"  - {{name: v{i}, accelerator: x, cost: '1', maxReplicas: 100}}\n" for i in range(3))
    )
    result = _lab("--fleet", str(fleet), "--policy", "oracle", timeout=60)
    assert result.returncode == 2
    assert "would search 1,000,000 replica mixes" in result.stderr


def test_a_malformed_trace_row_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    trace = tmp_path / "mine.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,10,5\n1,10\n")
    result = _lab("--trace", str(trace), timeout=60)
    assert result.returncode == 2
    assert f"{trace}:3: expected 3 columns" in result.stderr
