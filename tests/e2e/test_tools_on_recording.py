"""`wva record`, `replay --check`, `tail` and `top` on the recording of a sandbox run (the ci scenario).

`tail` and `top` read NATS streams, and the sandbox's NATS is gone once it exits, so the recording is
published again, in order, into a fresh nats-server: the tools then see what they would have seen
live at the end of the run.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from services.tools import tail, top
from shared import messages as m
from shared import natsio, streams
from shared.settings import Settings
from shared.subjects import Subjects
from tests.fixtures.sandbox import CI_FETCH_INTERVAL, CI_STABILIZATION, SandboxRun, run_sandbox
from tests.fixtures.servers import NatsServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(200), pytest.mark.serial]

S = Subjects()


def _entries(run: SandboxRun) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.record.read_text().splitlines() if line.strip()]


def _decisions(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["event"] for e in entries if e["event"]["kind"] == "decision.v1"]


def test_record_holds_the_whole_run(recorded_sandbox_run: SandboxRun) -> None:
    entries = _entries(recorded_sandbox_run)
    assert [e["t"] for e in entries] == sorted(e["t"] for e in entries)
    kinds = {e["event"]["kind"] for e in entries}
    assert {"target.v1", "metrics.v1", "invalidation.v1", "decision.v1"} <= kinds
    for entry in entries:
        message = m.any_decoder.decode(json.dumps(entry["event"]).encode())
        assert S.parse(entry["subject"]).name == message.name
    # Every scaling decision the sandbox printed is in the recording.
    recorded = {
        (d["name"], d["current"], d["desired"], d["reason"]) for d in _decisions(entries) if d["applied"]
    }
    printed = {
        (name, int(current), int(desired), reason)
        for name, current, desired, reason in re.findall(
            r"^t=\s*[\d.]+s (\S+)\s+(\d+) -> (\d+)\s+(\S+) \(applied\)", recorded_sandbox_run.output, re.M
        )
    }
    assert printed and printed <= recorded


def _replay(record: Path, tmp_path: Path) -> tuple[int, str, str]:
    # The run's scaler had its stabilization and staleness from settings; replay gets them as config.
    config = tmp_path / "scaling.yaml"
    config.write_text(
        "default: |\n"
        f"  scaleDownStabilizationSeconds: {CI_STABILIZATION:g}\n"
        f"  staleAfterSeconds: {3 * CI_FETCH_INTERVAL:g}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "replay", str(record), "--check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.timeout(400)
def test_every_recorded_run_replays_to_every_decision(
    recorded_sandbox_run: SandboxRun, scrape_sandbox_run: SandboxRun, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Five recorded sandbox runs — through Prometheus, through the scrape backend, and three shorter
    ones run side by side on a busy machine — each replay to every decision the live scaler made: same
    VA, counts, reason, outcome, trigger and instant, in the same order, and no other."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        busy = list(
            pool.map(
                lambda i: run_sandbox(tmp_path_factory.mktemp(f"sandbox-busy-{i}"), "--duration", "25s"), range(3)
            )
        )
    runs = [recorded_sandbox_run, scrape_sandbox_run, *busy]
    identical = 0
    for run in runs:
        recorded = _decisions(_entries(run))
        assert recorded, run.output
        assert any(d["applied"] and d["desired"] != d["current"] for d in recorded)  # it scaled
        code, _, err = _replay(run.record, tmp_path_factory.mktemp("replay"))
        assert code == 0, err
        assert f"replay: {len(recorded)} decisions, {len(recorded)} recorded, identical" in err
        identical += 1
    assert identical == len(runs) == 5


@pytest.fixture
async def republished(
    recorded_sandbox_run: SandboxRun, nats_server: NatsServer, nats_client: Client
) -> list[dict[str, Any]]:
    """The recording published again, in order, into a fresh nats-server with wva's streams."""
    js = nats_client.jetstream()
    await streams.ensure(js, S, streams.StreamSpec())
    entries = _entries(recorded_sandbox_run)
    for entry in entries:
        await natsio.publish(js, entry["subject"], m.any_decoder.decode(json.dumps(entry["event"]).encode()))
    return entries


def _last_per_subject(entries: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {e["subject"]: e["event"] for e in entries if e["event"]["kind"] == kind}


async def test_tail_last_shows_the_end_of_the_run(
    republished: list[dict[str, Any]], nats_server: NatsServer
) -> None:
    # --last starts every stored subject from its last value, the event log's subjects included.
    last = {
        kind: _last_per_subject(republished, kind)
        for kind in ("target.v1", "metrics.v1", "invalidation.v1", "decision.v1")
    }
    expected = sum(len(by_subject) for by_subject in last.values())
    out = io.StringIO()
    settings = Settings(nats_url=nats_server.url)
    assert (
        await asyncio.wait_for(tail.tail(settings, None, raw=False, last=True, count=expected, out=out), 30)
        == 0
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == expected
    for subject, target in last["target.v1"].items():  # the VA as it ended
        line = next(x for x in lines if f" {subject} target.v1 " in x)
        assert f"ready/spec={target['ready_replicas']}/{target['spec_replicas']}" in line
    for subject, decision in last["decision.v1"].items():
        line = next(x for x in lines if f" {subject} decision.v1 " in x)
        assert f"decision.v1 {decision['current']}->{decision['desired']} {decision['reason']} " in line
    assert not any(" ! " in x for x in lines)  # everything decodes


async def test_top_renders_every_va_as_it_ended(
    republished: list[dict[str, Any]], nats_server: NatsServer, nats_client: Client
) -> None:
    out = io.StringIO()
    assert await top.top(Settings(nats_url=nats_server.url), once=True, out=out, width=200) == 0  # `wva top --once`
    text = out.getvalue()
    targets = _last_per_subject(republished, "target.v1")
    decisions = _last_per_subject(republished, "decision.v1")
    for subject, target in targets.items():
        row = next(line for line in text.splitlines() if f" {target['name']} " in line)
        assert target["model_id"] in row
        assert f" {target['variant_cost']:g} " in row
        assert f"{target['ready_replicas']}/{target['spec_replicas']}" in row
        last = decisions[subject.replace(".targets.", ".decisions.")]
        assert f"{last['current']}->{last['desired']}" in row
        assert last["reason"] in row
