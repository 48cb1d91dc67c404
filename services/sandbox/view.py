"""What the person running the sandbox sees while it runs.

On a terminal, `LiveView` redraws a rich table twice a second: scenario progress, and per variant the
offered load, desired / spec / ready replicas, KV-cache usage, queue, TTFT and the last decision.
Without a terminal (CI, a pipe), `LineView` prints a line per scaling decision and per change of a
model group's hold reason instead. With several replicas (`--replicas`) both show who holds what: the
live view names the scaler replica behind each variant's last decision and lists each replica's
partitions; the line view prints a line whenever a replica's partitions change.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from services.sandbox import observe


class View(Protocol):
    def __enter__(self) -> View: ...

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def refresh(self, observer: observe.Observer, t: float) -> None: ...

    def say(self, line: str) -> None: ...


def decision_line(mark: observe.DecisionMark) -> str:
    """`t=  42.0s llama-cheap     1 -> 3  scale_up_saturated (applied) detail…`"""
    applied = "applied" if mark.is_scaling else mark.outcome or "not applied"
    return (
        f"t={mark.t:6.1f}s {mark.variant:<22} {mark.current:>2} -> {mark.desired:<2} {mark.reason} ({applied})"
        + (f" {mark.detail}" if mark.detail else "")
    )


def hold_line(group: str, mark: observe.DecisionMark) -> str:
    """`t=  61.7s Llama-3.1-8B-Instruct   hold_stabilizing  detail…` (a hold is the whole group's)."""
    # The reason starts in the same column as in decision_line.
    return f"t={mark.t:6.1f}s {group:<31} {mark.reason}" + (f"  {mark.detail}" if mark.detail else "")


def ownership_line(t: float, service: str, replica: str, owned: tuple[str, ...]) -> str:
    """`t=   3.2s owners  scaler-2-ab12cd (scaler) holds 8: 1,4,5,…`"""
    held = ",".join(owned) if owned else "nothing"
    return f"t={t:6.1f}s owners  {replica} ({service}) holds {len(owned)}: {held}"


def owners_text(observer: observe.Observer) -> str:
    """One line per service: each replica and how many partitions it holds."""
    lines = []
    for service, replicas in sorted(observer.timeline.owners().items()):
        held = "   ".join(
            f"{replica} {'watcher' if owned == ('watcher',) else len(owned)}" for replica, owned in sorted(replicas.items())
        )
        lines.append(f"{service:<8} {held}")
    return "\n".join(lines)


def _fmt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(observer: observe.Observer, t: float) -> Group:
    timeline = observer.timeline
    done = min(max(t, 0.0), timeline.duration)
    load = ", ".join(f"{model.split('/')[-1]} {rate:.1f} req/s" for model, rate in observer.load.items())
    header = Text.assemble(
        (f"scenario {timeline.scenario!r} ", "bold"), f"{done:.0f}/{timeline.duration:g}s   offered: {load}"
    )
    table = Table(expand=True)
    for column in (
        "variant",
        "cost",
        "desired",
        "spec",
        "ready",
        "served/s",
        "KV",
        "queue",
        "TTFT ms",
        "snapshot",
        "last decision",
    ):
        table.add_column(
            column,
            no_wrap=column != "last decision",
            justify="left" if column in ("variant", "last decision") else "right",
        )
    for name, live in observer.live.items():
        d = live.decision
        by = f" ({d.replica})" if d is not None and d.replica else ""
        age = "-" if live.snapshot_t is None else f"{max(t - live.snapshot_t, 0):.0f}s ago"
        if live.snapshot_status and live.snapshot_status != "ok":
            age += f" {live.snapshot_status}"
        table.add_row(
            name,
            f"{live.info.cost:g}",
            "-" if d is None else str(d.desired),
            str(live.spec),
            str(live.ready),
            f"{live.served_rps:.1f}",
            _fmt(live.kv, ".2f"),
            _fmt(live.waiting, "g"),
            _fmt(None if live.ttft is None else live.ttft * 1000, ".0f"),
            age,
            "-" if d is None else f"{d.t:.0f}s {d.current}->{d.desired} {d.reason}{by}",
        )
    bar = ProgressBar(total=timeline.duration, completed=done)
    recent = [decision_line(m) for m in observer.timeline.decisions if m.is_scaling][-5:]
    parts: list[RenderableType] = [header, bar, table]
    if timeline.ownership:
        parts.append(Text("partitions held\n" + owners_text(observer)))
    return Group(*parts, Text("\n".join(recent) or "no scaling decision yet", style="dim"))


class LiveView:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._live: Live | None = None

    def __enter__(self) -> LiveView:
        self._live = Live(console=self.console, refresh_per_second=2, transient=False)
        self._live.__enter__()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(t, e, tb)
            self._live = None

    def refresh(self, observer: observe.Observer, t: float) -> None:
        if self._live is not None:
            self._live.update(render(observer, t))

    def say(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False)


class LineView:
    """The headless view: a line per replica change, and a line when a model group's hold reason
    changes; the other decisions are counted in the summary (`report.text_lines`).

    Holds are group-wide (every VA of a model holds for one reason), so a change is printed once per
    group, not once per VA. Of the holds that arrive between two refreshes (a second apart) only the
    group's last one counts: the transition and invalidation holds that follow every step within
    the same second show only in the counts.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._seen = 0
        self._owners_seen = 0
        self._shown: dict[str, str] = {}  # group -> hold reason last printed ("" after a step)

    def __enter__(self) -> LineView:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def refresh(self, observer: observe.Observer, t: float) -> None:
        holds: dict[str, observe.DecisionMark] = {}  # group -> its last hold since the last refresh
        decisions = observer.timeline.decisions
        for mark in decisions[self._seen :]:
            group = observer.group_of(mark.variant)
            if mark.is_step:
                holds.pop(group, None)
                self._shown[group] = ""
                self.say(decision_line(mark))
            elif mark.reason.startswith("hold_"):
                holds[group] = mark
            # else: the group's step went to another variant; that variant's line shows it.
        self._seen = len(decisions)
        ownership = observer.timeline.ownership
        for at, service, replica, owned in ownership[self._owners_seen :]:
            self.say(ownership_line(at, service, replica, owned))
        self._owners_seen = len(ownership)
        for group, mark in holds.items():
            if self._shown.get(group) != mark.reason:
                self._shown[group] = mark.reason
                self.say(hold_line(group, mark))

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)
