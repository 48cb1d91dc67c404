"""The `wva` command as a user runs it, in a fresh interpreter: `python -m services.<name>` and
`wva --help`, which must import no subcommand's code (the sandbox alone is 30 modules plus rich and
jsonschema)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# What `wva --help` may import from this project (besides services.cli itself, run as __main__): `shared`
# for the version, and the service packages' `__init__` (finding a subcommand's module imports its package, nothing more).
HELP_IMPORTS = {
    "services",
    "shared",
    "services.watcher",
    "services.fetcher",
    "services.scaler",
    "services.sandbox",
    "services.lab",  # finding `wva lab`'s module imports the package's __init__ (its exceptions)
    "services.tools",
}
HEAVY = (
    "rich",
    "jsonschema",
    "nats",
    "kubernetes_asyncio",
    "aiohttp",
    "msgspec",
    "yaml",
    "prometheus_client",
)


def _imported(*args: str) -> set[str]:
    """The modules `python -X importtime -m services.cli <args>` imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "usage: wva" in result.stdout, result.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_wva_help_imports_no_subcommand() -> None:
    imported = _imported("--help")
    ours = {m for m in imported if m.split(".")[0] in ("services", "shared")}
    assert ours == HELP_IMPORTS
    assert [m for m in imported if m.split(".")[0] in HEAVY] == []


def test_a_tool_imports_neither_the_sandbox_nor_the_services() -> None:
    imported = _imported("top", "--help")
    assert "services.tools.connection" in imported  # top's own imports are there
    assert sorted(m for m in imported if m.startswith("services.sandbox.")) == []
    assert "jsonschema" not in imported


@pytest.mark.parametrize("service", ["watcher", "fetcher", "scaler"])
def test_python_dash_m_runs_the_service_cli(service: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: wva {service}")
    assert "WVA_NATS_URL" in result.stdout
