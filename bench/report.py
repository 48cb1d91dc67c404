"""Tables, statistics and the machine description shared by every benchmark.

A benchmark returns :class:`Table` objects; :class:`Report` prints them with rich and writes
``<name>.json`` and ``<name>.md`` under ``bench/results/`` (or ``--out``). Statistics are medians with a
spread: the interquartile range when there are enough repetitions, otherwise min-max.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

RESULTS = Path(__file__).parent / "results"


# ---------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stat:
    """Median of repetitions with a spread (``lo``..``hi``: IQR when n >= 5, else min..max)."""

    median: float
    lo: float
    hi: float
    n: int

    def fmt(self, digits: int = 3, scale: float = 1.0) -> str:
        m, lo, hi = self.median * scale, self.lo * scale, self.hi * scale
        return f"{_num(m, digits)} [{_num(lo, digits)}..{_num(hi, digits)}]"

    def json(self) -> dict[str, float | int]:
        return asdict(self)


def stat(values: Sequence[float]) -> Stat:
    vals = sorted(v for v in values if not math.isnan(v))
    if not vals:
        return Stat(math.nan, math.nan, math.nan, 0)
    if len(vals) >= 5:
        q = statistics.quantiles(vals, n=4, method="inclusive")
        return Stat(statistics.median(vals), q[0], q[2], len(vals))
    return Stat(statistics.median(vals), vals[0], vals[-1], len(vals))


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) — no interpolation beyond what was observed."""
    vals = sorted(values)
    if not vals:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(vals)))
    return vals[min(rank, len(vals)) - 1]


def ratio(a: Stat | float, b: Stat | float) -> float:
    x = a.median if isinstance(a, Stat) else a
    y = b.median if isinstance(b, Stat) else b
    return x / y if y else math.nan


def _num(x: float, digits: int) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt(x: float | int | str | Stat | None, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, Stat):
        return x.fmt(digits)
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return f"{x:,}"
    return _num(x, digits)


# ---------------------------------------------------------------------------------------- tables


@dataclass
class Table:
    """One benchmark's result: ``rows`` hold display strings, ``data`` the raw numbers for the JSON."""

    key: str  # stable identifier, e.g. "core_throughput"
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str = ""  # why this benchmark could not run, if it did not

    def add(self, display: Sequence[Any], **data: Any) -> None:
        self.rows.append([fmt(v) for v in display])
        self.data.append({k: (v.json() if isinstance(v, Stat) else v) for k, v in data.items()})

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.skipped:
            return "\n".join([*lines, f"_Not measured: {self.skipped}_", ""])
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines.extend("| " + " | ".join(r) + " |" for r in self.rows)
        lines.append("")
        lines.extend(f"- {n}" for n in self.notes)
        if self.notes:
            lines.append("")
        return "\n".join(lines)

    def rich(self) -> RichTable:
        t = RichTable(
            title=self.title,
            title_justify="left",
            caption="\n".join(self.notes) or None,
            caption_justify="left",
        )
        for c in self.columns:
            t.add_column(c, overflow="fold")
        for r in self.rows:
            t.add_row(*r)
        return t

    def json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": self.data,
            "notes": self.notes,
            "skipped": self.skipped,
        }


# ---------------------------------------------------------------------------------------- machine


def _version(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    from bench import servers

    nats = servers.nats_server_binary()
    prom = servers.prometheus_binary()
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": _cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "nats_server": _version([nats, "--version"]) if nats else "not found",
        "prometheus": _version([prom, "--version"]) if prom else "not found",
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "commit": _git_commit(),
    }


# ---------------------------------------------------------------------------------------- report


class Report:
    def __init__(self, mode: str, out: Path = RESULTS) -> None:
        self.mode = mode
        self.out = out
        self.started = time.time()
        self.machine = machine()
        self.tables: list[Table] = []
        self.console = Console(width=160)

    def header(self) -> None:
        m = self.machine
        self.console.print(
            f"[bold]wva benchmarks[/] ({self.mode}) — {m['cores']} cores ({m['cpu']}), Python {m['python']}, "
            f"{m['nats_server']}, {m['prometheus']}, load average {m['loadavg_at_start']}"
        )

    def add(self, table: Table) -> None:
        self.tables.append(table)
        if table.skipped:
            self.console.print(f"[yellow]{table.title}: not measured — {table.skipped}[/]")
        else:
            self.console.print(table.rich())

    def write(self) -> tuple[Path, Path]:
        self.out.mkdir(parents=True, exist_ok=True)
        self.machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))
        doc = {
            "mode": self.mode,
            "started": stamp,
            "duration_s": round(time.time() - self.started, 1),
            "machine": self.machine,
            "benchmarks": {t.key: t.json() for t in self.tables},
        }
        json_path = self.out / f"{self.mode}.json"
        md_path = self.out / f"{self.mode}.md"
        json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        md_path.write_text(self.markdown(stamp, float(doc["duration_s"])))  # type: ignore[arg-type]
        return json_path, md_path

    def markdown(self, stamp: str, duration: float) -> str:
        m = self.machine
        lines = [
            f"## wva benchmarks — `{self.mode}` run, {stamp} ({duration:.0f} s, commit {m['commit']})",
            "",
            f"Machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['nats_server']}, "
            f"{m['prometheus']}; load average {m['loadavg_at_start']} at start, {m.get('loadavg_at_end')} at end.",
            "Figures are medians with [spread] (interquartile range with 5+ repetitions, else min-max).",
            "",
        ]
        lines.extend(t.markdown() for t in self.tables)
        return "\n".join(lines)
