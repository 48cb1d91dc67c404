"""The end of a sandbox run: summary figures, a rich table, and a self-contained HTML report (pure).

The HTML has no scripts and loads nothing: charts are inline SVG, styles inline CSS, so the file can
be mailed, attached to a CI run or opened offline.
"""

from __future__ import annotations

import html
import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table

from services.sandbox import expectations, observe

# A decision that left this VA alone because the group's step went to another variant.
UNCHANGED = "another variant's step"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


@dataclass(frozen=True, kw_only=True)
class VariantSummary:
    name: str
    cost: float
    served: int
    ttft_p50: float | None
    ttft_p95: float | None
    ttft_p99: float | None
    e2e_p50: float | None
    e2e_p99: float | None
    replica_minutes: float
    cost_minutes: float  # replica-minutes x variant cost
    max_replicas: int
    final_replicas: int
    scale_ups: int
    scale_downs: int


@dataclass(frozen=True, kw_only=True)
class Summary:
    scenario: str
    collector: str
    duration: float
    sent: int
    queued: int  # waited at the gateway (the router's queue) first
    refused: int  # timed out at the gateway, or rejected by a replica
    decisions: int
    first_scale_up: float | None  # seconds after the load started
    steps: int  # decisions that changed a VA's replicas (applied or not)
    holds: dict[str, int]  # the other decisions, by reason, most frequent first
    variants: list[VariantSummary]
    outcomes: list[expectations.Outcome]
    crashed: list[str]
    attribution: str = ""  # a recorded trace's, printed with the results

    @property
    def ok(self) -> bool:
        return not self.crashed and all(o.met for o in self.outcomes)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def replica_minutes(samples: Sequence[observe.Sample], variant: str) -> float:
    """Integral of spec.replicas over time (each sample's count holds until the next sample)."""
    total = 0.0
    for here, after in itertools.pairwise(samples):
        point = here.variants.get(variant)
        if point is not None:
            total += point.spec * (after.t - here.t)
    return total / 60


def summarize(
    timeline: observe.Timeline,
    *,
    collector: str,
    outcomes: list[expectations.Outcome],
    crashed: list[str],
) -> Summary:
    variants = []
    for info in timeline.variants:
        done = timeline.completions.get(info.name, [])
        ttft = [c[1] for c in done]
        e2e = [c[2] for c in done]
        specs = [s.variants[info.name].spec for s in timeline.samples if info.name in s.variants]
        marks = [d for d in timeline.decisions if d.variant == info.name and d.is_scaling]
        minutes = replica_minutes(timeline.samples, info.name)
        variants.append(
            VariantSummary(
                name=info.name,
                cost=info.cost,
                served=len(done),
                ttft_p50=percentile(ttft, 50),
                ttft_p95=percentile(ttft, 95),
                ttft_p99=percentile(ttft, 99),
                e2e_p50=percentile(e2e, 50),
                e2e_p99=percentile(e2e, 99),
                replica_minutes=minutes,
                cost_minutes=minutes * info.cost,
                max_replicas=max(specs, default=info.initial_replicas),
                final_replicas=specs[-1] if specs else info.initial_replicas,
                scale_ups=sum(1 for d in marks if d.desired > d.current),
                scale_downs=sum(1 for d in marks if d.desired < d.current),
            )
        )
    ups = [d.t for d in timeline.decisions if d.is_scaling and d.desired > d.current]
    holds = Counter(
        d.reason if d.reason.startswith("hold_") else UNCHANGED for d in timeline.decisions if not d.is_step
    )
    return Summary(
        scenario=timeline.scenario,
        collector=collector,
        duration=timeline.duration,
        sent=sum(timeline.sent.values()),
        queued=sum(timeline.queued.values()),
        refused=sum(timeline.refused.values()),
        decisions=len(timeline.decisions),
        first_scale_up=min(ups, default=None),
        steps=sum(1 for d in timeline.decisions if d.is_step),
        holds=dict(holds.most_common()),
        variants=variants,
        outcomes=outcomes,
        crashed=crashed,
        attribution=timeline.attribution,
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def table(summary: Summary) -> Table:
    t = Table(
        title=f"sandbox {summary.scenario!r}: {summary.duration:g}s of load, collector {summary.collector}"
    )
    for column in (
        "variant",
        "cost",
        "served",
        "TTFT p50/p95/p99 ms",
        "e2e p50/p99 ms",
        "replica-min",
        "max",
        "final",
        "ups",
        "downs",
    ):
        t.add_column(column, justify="left" if column == "variant" else "right")
    for v in summary.variants:
        t.add_row(
            v.name,
            f"{v.cost:g}",
            str(v.served),
            f"{_ms(v.ttft_p50)}/{_ms(v.ttft_p95)}/{_ms(v.ttft_p99)}",
            f"{_ms(v.e2e_p50)}/{_ms(v.e2e_p99)}",
            f"{v.replica_minutes:.1f}",
            str(v.max_replicas),
            str(v.final_replicas),
            str(v.scale_ups),
            str(v.scale_downs),
        )
    return t


def text_lines(summary: Summary) -> list[str]:
    """The lines printed under the table: totals, expectations, crashes, verdict."""
    first = (
        "none" if summary.first_scale_up is None else f"{summary.first_scale_up:.1f}s after the load started"
    )
    lines = [
        f"requests offered {summary.sent}, waited at the gateway {summary.queued}, not served (timed out "
        f"there or rejected) {summary.refused}; "
        f"{summary.decisions} decisions; first scale-up {first}",
        f"decisions: {summary.steps} replica changes, {summary.decisions - summary.steps} holds ("
        + ", ".join(f"{reason} {n}" for reason, n in summary.holds.items())
        + ")",
    ]
    lines += summary.attribution.splitlines()
    for o in summary.outcomes:
        lines.append(f"  [{'ok' if o.met else 'FAILED'}] {o.text}")
    for name in summary.crashed:
        lines.append(f"  [CRASHED] {name}")
    lines.append("result: " + ("ok" if summary.ok else "FAILED"))
    return lines


# ---------------------------------------------------------------- SVG charts

W = 920
LEFT, RIGHT, TOP, PLOT_H = 56, 16, 26, 156  # the plot area; the legend goes under it, never beside
AXIS_LABELS = 28  # under the plot: the time labels
LEGEND_ROW, SWATCH, LEGEND_GAP = 18, 20, 22
LEGEND_FONT = 12  # px, as .lg in _CSS
# Wider than any font's average advance at LEGEND_FONT px (uppercase and digits included), so a
# laid-out label never reaches the next one or the edge: SVG text is never cut, only overflows.
CHAR_WIDTH = 0.62 * LEGEND_FONT


@dataclass(frozen=True, kw_only=True)
class Series:
    label: str
    color: str
    points: list[tuple[float, float | None]]  # None: a gap
    dash: str = ""
    step: bool = False


def legend_layout(labels: Sequence[str], *, left: float = LEFT, right: float = W - RIGHT) -> list[tuple[float, int]]:
    """(x, row) of each legend entry (swatch then label), flowed left to right under the plot and
    wrapped to a new row before an entry would pass `right`."""
    placed: list[tuple[float, int]] = []
    x, row = left, 0
    for label in labels:
        width = SWATCH + 4 + len(label) * CHAR_WIDTH
        if x > left and x + width > right:
            x, row = left, row + 1
        placed.append((x, row))
        x += width + LEGEND_GAP
    return placed


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for mult in (1, 2, 2.5, 5, 10):
        if value <= mult * exp:
            return float(mult * exp)
    return float(10 * exp)


def chart(
    title: str,
    series: list[Series],
    *,
    x_max: float,
    unit: str = "",
    y_max: float | None = None,
    marks: Sequence[tuple[float, str, str]] = (),  # (t, color, tooltip)
    hline: tuple[float, str] | None = None,  # (y, label)
) -> str:
    values = [v for s in series for _, v in s.points if v is not None]
    top = y_max if y_max is not None else _nice_max(max(values, default=0.0) * 1.05)
    pw, ph = W - LEFT - RIGHT, PLOT_H
    legend = legend_layout([s.label for s in series])
    legend_top = TOP + ph + AXIS_LABELS
    rows = 1 + max((row for _, row in legend), default=-1)
    height = legend_top + rows * LEGEND_ROW + 4
    x_max = x_max or 1.0

    def x(t: float) -> float:
        return LEFT + pw * min(max(t, 0.0), x_max) / x_max

    def y(v: float) -> float:
        return TOP + ph * (1 - min(max(v, 0.0), top) / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img">',
        f"<title>{html.escape(title)}</title>",
        f'<text x="{LEFT}" y="16" class="t">{html.escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" class="frame"/>',
    ]
    for i in range(5):
        v = top * i / 4
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" class="yl">{v:g}{html.escape(unit)}</text>')
    ticks = _nice_max(x_max / 6)
    t = 0.0
    while t <= x_max + 1e-9:
        out.append(f'<text x="{x(t):.1f}" y="{TOP + ph + 18}" class="xl">{t:g}s</text>')
        t += ticks
    for t_mark, color, tip in marks:
        out.append(
            f'<line x1="{x(t_mark):.1f}" x2="{x(t_mark):.1f}" y1="{TOP}" y2="{TOP + ph}" class="mark" '
            f'stroke="{color}"><title>{html.escape(tip)}</title></line>'
        )
    if hline is not None:
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(hline[0]):.1f}" y2="{y(hline[0]):.1f}" class="hline"/>'
        )
        out.append(
            f'<text x="{LEFT + pw - 4}" y="{y(hline[0]) - 4:.1f}" class="yl">{html.escape(hline[1])}</text>'
        )
    for k, s in enumerate(series):
        for run in _runs(s.points):
            coords: list[str] = []
            for j, (t_p, v) in enumerate(run):
                if s.step and j > 0:
                    coords.append(f"{x(t_p):.1f},{y(run[j - 1][1]):.1f}")
                coords.append(f"{x(t_p):.1f},{y(v):.1f}")
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            out.append(f'<polyline points="{" ".join(coords)}" stroke="{s.color}"{dash} class="line"/>')
        lx, row = legend[k]
        ly = legend_top + row * LEGEND_ROW + 12
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(
            f'<line x1="{lx:.1f}" x2="{lx + SWATCH:.1f}" y1="{ly - 4}" y2="{ly - 4}" stroke="{s.color}"{dash} class="line"/>'
        )
        out.append(f'<text x="{lx + SWATCH + 4:.1f}" y="{ly}" class="lg">{html.escape(s.label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _runs(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Split at gaps (None values)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in points:
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, v))
    return [r for r in runs if r]


# ---------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:960px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left} .ok{color:#197a1f} .bad{color:#b00020;font-weight:bold}
svg{display:block;margin:10px 0} .t{font-weight:bold;font-size:13px} .frame{fill:none;stroke:#999}
.grid{stroke:#eee} .yl{font-size:11px;text-anchor:end;fill:#555} .xl{font-size:11px;text-anchor:middle;fill:#555}
.lg{font-size:12px} .line{fill:none;stroke-width:2} .mark{stroke-width:1;stroke-dasharray:2 3;opacity:.7}
.hline{stroke:#999;stroke-dasharray:6 4} code{background:#f3f3f3;padding:0 3px} pre{white-space:pre-wrap}
"""


def render_html(summary: Summary, timeline: observe.Timeline, *, kv_threshold: float = 0.8) -> str:
    samples = timeline.samples
    x_max = max((s.t for s in samples), default=timeline.duration)
    colors = {v.name: PALETTE[i % len(PALETTE)] for i, v in enumerate(timeline.variants)}
    marks = [
        (d.t, colors[d.variant], f"{d.t:.1f}s {d.variant} {d.current}->{d.desired} {d.reason}")
        for d in timeline.decisions
        if d.is_scaling
    ]

    def per_variant(field: str, scale: float = 1.0, **kw: object) -> list[Series]:
        out = []
        for v in timeline.variants:
            pts: list[tuple[float, float | None]] = []
            for s in samples:
                p = s.variants.get(v.name)
                raw = None if p is None else getattr(p, field)
                pts.append((s.t, None if raw is None else float(raw) * scale))
            out.append(Series(label=v.name, color=colors[v.name], points=pts, **kw))  # type: ignore[arg-type]
        return out

    load = [
        Series(
            label=f"offered {model.split('/')[-1]}",
            color="#444",
            points=[(s.t, s.load.get(model)) for s in samples],
        )
        for model in timeline.models
    ]
    served = [
        Series(label=f"served {s.label}", color=s.color, points=s.points, dash="5 3")
        for s in per_variant("served_rps")
    ]
    replicas: list[Series] = []
    for v in timeline.variants:
        c = colors[v.name]
        replicas.append(
            Series(
                label=f"{v.name} spec",
                color=c,
                points=[(s.t, s.variants[v.name].spec) for s in samples if v.name in s.variants],
                step=True,
            )
        )
        replicas.append(
            Series(
                label=f"{v.name} ready",
                color=c,
                dash="2 3",
                points=[(s.t, s.variants[v.name].ready) for s in samples if v.name in s.variants],
                step=True,
            )
        )
    max_repl = max((v.max_replicas for v in timeline.variants), default=1)
    charts = [
        chart("Load (requests/s)", load + served, x_max=x_max, marks=marks),
        chart(
            "Replicas per variant (solid: spec.replicas, dotted: ready)",
            replicas,
            x_max=x_max,
            y_max=float(max_repl + 1),
            marks=marks,
        ),
        chart(
            "KV-cache usage (mean over replicas, as wva saw it)",
            per_variant("kv", step=True),
            x_max=x_max,
            y_max=1.0,
            marks=marks,
            hline=(kv_threshold, f"threshold {kv_threshold:g}"),
        ),
        chart(
            "Queue (waiting requests, summed over replicas)",
            per_variant("waiting", step=True),
            x_max=x_max,
            marks=marks,
        ),
        chart(
            "TTFT (ms, average in the fetcher's window)",
            per_variant("ttft", scale=1000.0, step=True),
            x_max=x_max,
            marks=marks,
        ),
    ]
    head = (
        "<tr><th>variant</th><th>cost</th><th>served</th><th>TTFT p50/p95/p99 ms</th><th>e2e p50/p99 ms</th>"
        "<th>replica-minutes</th><th>cost x minutes</th><th>max</th><th>final</th><th>scale-ups</th><th>scale-downs</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{html.escape(v.name)}</td><td>{v.cost:g}</td><td>{v.served}</td>"
        f"<td>{_ms(v.ttft_p50)}/{_ms(v.ttft_p95)}/{_ms(v.ttft_p99)}</td><td>{_ms(v.e2e_p50)}/{_ms(v.e2e_p99)}</td>"
        f"<td>{v.replica_minutes:.1f}</td><td>{v.cost_minutes:.0f}</td><td>{v.max_replicas}</td>"
        f"<td>{v.final_replicas}</td><td>{v.scale_ups}</td><td>{v.scale_downs}</td></tr>"
        for v in summary.variants
    )
    checks = "".join(
        f'<li class="{"ok" if o.met else "bad"}">{"ok" if o.met else "FAILED"}: {html.escape(o.text)}</li>'
        for o in summary.outcomes
    ) + "".join(f'<li class="bad">CRASHED: {html.escape(n)}</li>' for n in summary.crashed)
    scaling = "".join(
        f"<tr><td>{d.t:.1f}s</td><td>{html.escape(d.variant)}</td><td>{d.current} &rarr; {d.desired}</td>"
        f"<td>{html.escape(d.reason)}</td><td style='text-align:left'>{html.escape(d.detail)}</td></tr>"
        for d in timeline.decisions
        if d.is_scaling
    )
    lines = html.escape("\n".join(text_lines(summary)))
    verdict = '<span class="ok">ok</span>' if summary.ok else '<span class="bad">FAILED</span>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wva sandbox: {html.escape(summary.scenario)}</title>
<style>{_CSS}</style></head><body>
<h1>wva sandbox: scenario <code>{html.escape(summary.scenario)}</code> &mdash; {verdict}</h1>
<p>{summary.duration:g} s of load, metrics through <b>{html.escape(summary.collector)}</b>.
Dotted vertical lines mark applied scaling decisions (hover for the reason).</p>
{"".join(f"<p>{html.escape(line)}</p>" for line in summary.attribution.splitlines())}
<h2>Summary</h2>
<table>{head}{rows}</table>
<pre>{lines}</pre>
<h2>Expectations</h2><ul>{checks or "<li>none stated</li>"}</ul>
<h2>Over time</h2>
{"".join(charts)}
<h2>Scaling decisions ({sum(1 for d in timeline.decisions if d.is_scaling)} of {len(timeline.decisions)})</h2>
<table><tr><th>t</th><th>variant</th><th>replicas</th><th>reason</th><th>detail</th></tr>{scaling}</table>
</body></html>
"""
