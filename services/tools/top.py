"""``wva top``: a live table of every VA, from the state streams.

Model, cost, replicas, KV-cache usage, queue, the age of the snapshot, the last decision and its
reason, and any problems — everything the pipeline currently believes, in one screen. On a narrow
terminal the least useful columns go first (model, namespace, cost, snapshot age) and the reason is
cut short; the numbers always show in full.

With several replicas (docs/design.md §11) it also reads the lease bucket every couple of seconds:
an ``owner`` column names the scaler replica that decides for each VA's group, and a second table
lists, per service, which replica holds which partitions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TextIO

import nats.errors
from nats.js import JetStreamContext
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from services.tools import connection, subscription
from shared import messages as m
from shared import streams
from shared.lifecycle import leases_bucket
from shared.natsleases import read_bucket
from shared.observability import count_rejected
from shared.partitions import partition_of
from shared.settings import Settings
from shared.subjects import SubjectKind, Subjects

HELP = "live table of every VA: replicas, KV usage, queue, snapshot age, last decision"


@dataclass
class Row:
    target: m.Target | None = None
    snapshot: m.MetricsSnapshot | None = None
    decision: m.Decision | None = None


@dataclass
class TopState:
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    leases: dict[str, str | None] = field(default_factory=dict)  # "<service>.<partition>" -> holder
    partitions: int = 16

    def owner(self, target: m.Target | None) -> str:
        """The scaler replica holding the lease on the VA's group ("-": nobody now)."""
        if target is None:
            return "?"
        key = f"scaler.{partition_of(target.namespace, target.model_id, self.partitions)}"
        return self.leases.get(key) or "-"

    def apply(self, data: bytes) -> None:
        try:
            message = m.any_decoder.decode(data)
        except m.MessageError as exc:
            count_rejected("top", exc.reason)
            return
        key = (message.namespace, message.name)
        if isinstance(message, m.TargetDeleted):
            self.rows.pop(key, None)
            return
        if isinstance(message, m.MetricsDeleted):
            return
        row = self.rows.setdefault(key, Row())
        if isinstance(message, m.Target):
            row.target = message
        elif isinstance(message, m.MetricsSnapshot):
            row.snapshot = message
        elif isinstance(message, m.Decision):
            row.decision = message


def _avg(values: list[float]) -> str:
    return f"{sum(values) / len(values):.2f}" if values else "-"


@dataclass(frozen=True)
class Column:
    name: str
    drop_rank: int = 0  # on a narrow terminal the highest rank goes first; 0 is never dropped
    squeezable: bool = False  # may be cut with an ellipsis (text, never numbers)


COLUMNS = (
    Column("namespace", drop_rank=3),
    Column("VA"),
    Column("model", drop_rank=4),  # long, and the same for every variant of a model
    Column("cost", drop_rank=2),
    Column("ready/spec"),
    Column("KV avg"),
    Column("waiting"),
    Column("age", drop_rank=1),
    Column("decision"),
    Column("reason", squeezable=True),
)
OWNER = Column("owner", drop_rank=5)  # shown with leases only
SQUEEZED_MIN = 16  # what a squeezable column keeps at least
GAP = 2  # per column: its right padding and the blank rule between columns


def columns(state: TopState) -> tuple[Column, ...]:
    return (*COLUMNS, OWNER) if state.leases else COLUMNS


def _cells(state: TopState, now: float) -> list[list[str]]:
    rows = []
    for (namespace, name), row in sorted(state.rows.items()):
        t, s, d = row.target, row.snapshot, row.decision
        kv = [r.kv_cache_usage for r in s.replicas if r.kv_cache_usage is not None] if s else []
        waiting = [r.waiting for r in s.replicas if r.waiting is not None] if s else []
        age = f"{now - s.collected_at.timestamp():.0f}s" if s else "-"
        if s and s.status != "ok":
            age += f" {s.status}"
        reason = d.reason if d else ""
        if t and t.problems:
            reason = "problems: " + "; ".join(f"{p.field}: {p.message}" for p in t.problems)
        rows.append(
            [
                namespace,
                name,
                t.model_id if t else "?",
                f"{t.variant_cost:g}" if t else "",
                f"{t.ready_replicas}/{t.spec_replicas}" if t else "",
                _avg(kv),
                f"{sum(waiting):g}" if waiting else "-",
                age,
                f"{d.current}->{d.desired}" if d else "",
                reason,
                *([state.owner(t)] if state.leases else []),
            ]
        )
    return rows


def fit(widths: list[int], width: int, shown: tuple[Column, ...] = COLUMNS) -> list[int]:
    """The indexes of ``shown`` to show in `width` characters, given each column's natural width:
    drop the least useful columns first, squeeze only text, never a number."""

    def needed(kept: list[int]) -> int:
        return sum(
            min(widths[i], SQUEEZED_MIN) if shown[i].squeezable else widths[i] for i in kept
        ) + GAP * len(kept)  # a cell's right padding and the (blank) rule after it

    kept = list(range(len(shown)))
    for rank in sorted({c.drop_rank for c in shown if c.drop_rank}, reverse=True):
        if needed(kept) <= width:
            break
        kept = [i for i in kept if shown[i].drop_rank != rank]
    return kept


def render(state: TopState, now: float, width: int = 200) -> Group:
    """The table for a terminal `width` columns wide (see `fit`), and with leases who holds what."""
    shown = columns(state)
    rows = _cells(state, now)
    widths = [max([len(c.name)] + [len(r[i]) for r in rows]) for i, c in enumerate(shown)]
    kept = fit(widths, width, shown)
    table = Table(title="wva top", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), expand=False)
    for i in kept:
        column = shown[i]
        if column.squeezable:
            table.add_column(
                column.name, no_wrap=True, overflow="ellipsis", min_width=min(widths[i], SQUEEZED_MIN)
            )
        else:
            table.add_column(column.name, no_wrap=True, min_width=widths[i])
    for row in rows:
        table.add_row(*(row[i] for i in kept))
    if not state.leases:
        return Group(table)
    return Group(table, owners_table(state))


def owners_table(state: TopState) -> Table:
    """Per service, each replica and the partitions it holds (from the lease bucket)."""
    held: dict[tuple[str, str], list[str]] = {}
    for key, holder in state.leases.items():
        service, _, partition = key.partition(".")
        held.setdefault((service, holder or "<unknown>"), []).append(partition)
    table = Table(title="partitions", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), expand=False)
    for name in ("service", "replica", "held", "partitions"):
        table.add_column(name, no_wrap=name != "partitions")
    for (service, holder), parts in sorted(held.items()):
        parts.sort(key=lambda p: (len(p), p))
        table.add_row(service, holder, str(len(parts)), ",".join(parts))
    return table


async def read_leases(js: JetStreamContext, bucket: str) -> dict[str, str | None]:
    """Every lease key of the bucket and its holder; empty without a bucket (no replica uses leases)."""
    try:
        kv = await js.key_value(bucket)
        entries = await read_bucket(js, kv, bucket, keys="*.*")
    except (nats.errors.Error, TimeoutError):
        return {}
    return {key: entry.holder for key, entry in entries.items()}


def render_text(state: TopState, now: float, width: int = 160) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 - closed below
    try:
        console.print(render(state, now, width))
        return console.export_text()
    finally:
        console.file.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="print the table once, when warm, and exit")
    connection.add_arguments(parser)


async def top(settings: Settings, *, once: bool, out: TextIO | None = None, width: int | None = None) -> int:
    subjects = Subjects(settings.subject_prefix)
    state = TopState()
    console = Console(file=out, width=width)
    async with connection.connected(settings, "top") as nc:
        js = nc.jetstream()
        followers = [
            streams.Follower(js, subjects.wildcard(k))
            for k in (SubjectKind.TARGETS, SubjectKind.METRICS, SubjectKind.DECISIONS)
        ]
        bucket = leases_bucket(settings, subjects)
        state.partitions = settings.partitions
        async with subscription.warm(followers, lambda msg: state.apply(msg.data)):
            state.leases = await read_leases(js, bucket)
            if once:
                console.print(render(state, time.time(), console.width))
                return 0
            with Live(
                render(state, time.time(), console.width), console=console, refresh_per_second=2
            ) as live:
                tick = 0
                while True:
                    await asyncio.sleep(0.5)
                    tick += 1
                    if tick % 4 == 0:
                        state.leases = await read_leases(js, bucket)
                    live.update(
                        render(state, time.time(), console.width)
                    )  # the terminal may have been resized
    return 0  # pragma: no cover - the live view runs until interrupted


def run(args: argparse.Namespace) -> int:
    settings = connection.load_settings(args)
    if settings is None:
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(top(settings, once=args.once))
    return 130
