"""A lab's results as a terminal table, deterministic JSON and a self-contained HTML report (pure:
functions from results to a rich Table or text; `command` writes the files).

The JSON has sorted keys and floats rounded to 6 decimals, and nothing from the wall clock, so the
same inputs give the same bytes. The HTML, like the sandbox's report, has no scripts and loads
nothing: inline SVG charts (the sandbox's `chart` helper) and a cost-vs-attainment scatter.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

from services.lab import fleet as fleets
from services.lab import scoring
from services.lab.policies.oracle import Plan
from services.lab.settings import Settings
from services.lab.traffic import Traffic
from services.sandbox.report import PALETTE, Series, chart

DASHES = ("", "8 4", "3 3", "10 3 2 3", "1 4", "6 2 6 6")


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a lab ran on, for the report's header and the JSON."""

    traffic: Traffic
    fleet: fleets.Fleet
    settings: Settings
    rate_scale: float
    window: tuple[float, float | None] | None
    oracle_window: float
    warm_start: bool
    seed: int | None = None


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def reaction(result: scoring.PolicyResult) -> str:
    """Median time to the first scale-up after a load rise, and how many rises got none."""
    found = [r for r in result.reactions if r is not None]
    if not result.reactions:
        return "-"
    text = f"{statistics.median(found):.0f}s" if found else "none"
    missed = len(result.reactions) - len(found)
    return text + (f" ({missed} of {len(result.reactions)} none)" if missed and found else "")


def table(results: Sequence[scoring.PolicyResult], ctx: Context) -> Table:
    names = [v.name for v in ctx.fleet.variants]
    t = Table(
        title=f"wva lab: {ctx.traffic.source}, {ctx.traffic.duration:.0f} s simulated, {len(ctx.traffic.arrivals)} requests",
        caption=ctx.traffic.attribution or None,
    )
    columns = [
        "policy",
        "SLO %",
        "vs oracle",
        "TTFT p50/p95/p99 ms",
        "ITL p50/p99 ms",
        "failed",
        "GPU cost",
        "vs oracle",
    ]
    columns += [f"{name} min" for name in names] + ["scalings", "reaction"]
    for c in columns:
        t.add_column(c, justify="left" if c == "policy" else "right")
    for r in results:
        t.add_row(
            r.policy,
            f"{r.attainment * 100:.1f}",
            _ratio(r.attainment_vs_oracle),
            f"{_ms(r.ttft_p50)}/{_ms(r.ttft_p95)}/{_ms(r.ttft_p99)}",
            f"{_ms(r.itl_p50)}/{_ms(r.itl_p99)}",
            str(r.failed_total),
            f"{r.gpu_cost:.2f}",
            _ratio(r.cost_vs_oracle),
            *[f"{v.replica_minutes:.1f}" for v in r.variants],
            str(r.scaling_actions),
            reaction(r),
        )
    return t


# ---------------------------------------------------------------------------------------- JSON


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def to_json(results: Sequence[scoring.PolicyResult], ctx: Context, plan: Plan | None) -> str:
    width, rates = scoring.offered_load(ctx.traffic)
    t = ctx.settings.timing
    document = {
        "attribution": ctx.traffic.attribution,
        "traffic": {
            "source": ctx.traffic.source,
            "requests": len(ctx.traffic.arrivals),
            "duration": ctx.traffic.duration,
            "rate_scale": ctx.rate_scale,
            "window": None if ctx.window is None else list(ctx.window),
            "seed": ctx.seed,
        },
        "fleet": {
            "model": ctx.fleet.model,
            "namespace": ctx.fleet.namespace,
            "variants": [
                {
                    "name": v.name,
                    "accelerator": v.accelerator,
                    "cost_per_hour": v.cost_per_hour,
                    "min_replicas": v.min_replicas,
                    "max_replicas": v.max_replicas,
                    "initial_replicas": v.initial,
                    "startup_seconds": v.startup_seconds,
                    "server": {
                        "max_num_seqs": v.server.max_num_seqs,
                        "kv_cache_tokens": v.server.kv_cache_tokens,
                        "block_size": v.server.block_size,
                        "prefill_seconds_per_token": v.server.prefill_seconds_per_token,
                        "decode_base_seconds": v.server.decode_base_seconds,
                        "decode_seconds_per_seq": v.server.decode_seconds_per_seq,
                    },
                }
                for v in ctx.fleet.variants
            ],
        },
        "settings": {
            "slo_ttft": ctx.settings.slo_ttft,
            "slo_itl": ctx.settings.slo_itl,
            "request_timeout": ctx.settings.request_timeout,
            "gateway": "flow-control" if ctx.settings.flow_control else "direct",
            "oracle_window": ctx.oracle_window,
            "warm_start": ctx.warm_start,
            "timing": asdict(t),
        },
        "load": {
            "bucket_seconds": width,
            "requests_per_second": rates,
            "rises": scoring.load_rises(ctx.traffic),
        },
        "oracle_plan": None
        if plan is None
        else {"window": plan.window, "mixes": plan.mixes, "searches": plan.runs},
        "policies": [{**asdict(r), "failed_total": r.failed_total} for r in results],
    }
    return json.dumps(_clean(document), sort_keys=True, indent=1) + "\n"


# ---------------------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px} .attr{color:#555;font-size:13px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,th:first-child{text-align:left} svg{display:block;margin:10px 0}
.t{font-weight:bold;font-size:13px} .frame{fill:none;stroke:#999} .grid{stroke:#eee}
.yl{font-size:11px;text-anchor:end;fill:#555} .xl{font-size:11px;text-anchor:middle;fill:#555}
.lg{font-size:12px} .line{fill:none;stroke-width:2} .mark{stroke-width:1;stroke-dasharray:2 3;opacity:.7}
.hline{stroke:#999;stroke-dasharray:6 4} code{background:#f3f3f3;padding:0 3px} dt{font-weight:bold}
"""


def scatter(results: Sequence[scoring.PolicyResult], colors: Mapping[str, str]) -> str:
    """GPU cost (x) against SLO attainment (y), one labelled point per policy."""
    w, h, left, right, top, bottom = 920, 320, 60, 160, 26, 36
    pw, ph = w - left - right, h - top - bottom
    costs = [r.gpu_cost for r in results] or [1.0]
    x_max = max(costs) * 1.1 or 1.0
    y_min = min([r.attainment for r in results] + [0.9])
    y_min = math.floor(y_min * 10) / 10

    def x(v: float) -> float:
        return left + pw * v / x_max

    def y(v: float) -> float:
        return top + ph * (1 - (v - y_min) / (1 - y_min or 1))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">',
        "<title>GPU cost against SLO attainment, one point per policy</title>",
        f'<text x="{left}" y="16" class="t">GPU cost (x) against SLO attainment (y), one point per policy</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>',
    ]
    for i in range(5):
        a = y_min + (1 - y_min) * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(a):.1f}" y2="{y(a):.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y(a) + 4:.1f}" class="yl">{a * 100:.0f}%</text>')
        c = x_max * i / 4
        out.append(f'<text x="{x(c):.1f}" y="{h - 12}" class="xl">{c:.2f}</text>')
    labels: dict[tuple[float, float], list[str]] = {}
    for r in results:
        labels.setdefault((round(x(r.gpu_cost), 1), round(y(r.attainment), 1)), []).append(r.policy)
    for k, r in enumerate(results):
        color = colors[r.policy]
        out.append(f'<circle cx="{x(r.gpu_cost):.1f}" cy="{y(r.attainment):.1f}" r="5" fill="{color}"><title>'
                   f"{html.escape(r.policy)}: cost {r.gpu_cost:.2f}, attainment {r.attainment * 100:.1f}%</title></circle>")  # fmt: skip
        ly = top + 12 + 16 * k
        out.append(f'<circle cx="{left + pw + 16}" cy="{ly - 4}" r="5" fill="{color}"/>')
        out.append(f'<text x="{left + pw + 28}" y="{ly}" class="lg">{html.escape(r.policy)}</text>')
    # Policies on the same spot share one label, so none hides another.
    for (px, py), names in labels.items():
        out.append(
            f'<text x="{px + 8:.1f}" y="{py - 8:.1f}" class="lg">{html.escape(", ".join(names))}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def render_html(results: Sequence[scoring.PolicyResult], ctx: Context, plan: Plan | None) -> str:
    colors = {r.policy: PALETTE[i % len(PALETTE)] for i, r in enumerate(results)}
    duration = ctx.traffic.duration
    end = max([duration, *(r.end for r in results)])
    width, rates = scoring.offered_load(ctx.traffic)
    charts = [
        chart(
            "Offered load (requests/s)",
            [
                Series(
                    label="offered",
                    color="#444",
                    points=[((k + 0.5) * width, v) for k, v in enumerate(rates)],
                )
            ],
            x_max=duration,
        )
    ]
    for k, v in enumerate(ctx.fleet.variants):
        series = []
        for i, r in enumerate(results):
            points: list[tuple[float, float | None]] = [(t, float(spec[k])) for t, spec in r.replicas]
            points.append((end, points[-1][1]))
            # A dash pattern per policy, so a line drawn over another of the same count still shows.
            dash = DASHES[i % len(DASHES)]
            series.append(Series(label=r.policy, color=colors[r.policy], points=points, step=True, dash=dash))
        charts.append(
            chart(
                f"Replicas of {v.name} ({v.accelerator}, {v.cost}/h), per policy",
                series,
                x_max=end,
                y_max=float(v.max_replicas + 1),
            )
        )
    ttft = [
        Series(
            label=r.policy,
            color=colors[r.policy],
            points=[
                ((i + 0.5) * width, None if p is None else p * 1000) for i, p in enumerate(r.ttft_p95_series)
            ],
        )
        for r in results
    ]
    charts.append(
        chart(
            "TTFT p95 of the requests arriving in each interval (ms)",
            ttft,
            x_max=duration,
            hline=(ctx.settings.slo_ttft * 1000, f"SLO {ctx.settings.slo_ttft * 1000:.0f} ms"),
        )
    )
    charts.append(scatter(results, colors))
    columns = ["policy", "SLO attainment", "vs oracle", "TTFT p50/p95/p99 ms", "ITL p50/p99 ms", "failed",
               "GPU cost", "vs oracle", *[f"{v.name} replica-min" for v in ctx.fleet.variants], "scalings",
               "first scale-up", "reaction to rises"]  # fmt: skip
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = "".join(
        f"<tr><td>{html.escape(r.policy)}</td><td>{r.attainment * 100:.1f}%</td><td>{_ratio(r.attainment_vs_oracle)}</td>"
        f"<td>{_ms(r.ttft_p50)}/{_ms(r.ttft_p95)}/{_ms(r.ttft_p99)}</td><td>{_ms(r.itl_p50)}/{_ms(r.itl_p99)}</td>"
        f"<td>{r.failed_total}</td><td>{r.gpu_cost:.2f}</td><td>{_ratio(r.cost_vs_oracle)}</td>"
        + "".join(f"<td>{v.replica_minutes:.1f}</td>" for v in r.variants)
        + f"<td>{r.scaling_actions}</td><td>{'-' if r.first_scale_up is None else f'{r.first_scale_up:.0f}s'}</td>"
        f"<td>{html.escape(reaction(r))}</td></tr>"
        for r in results
    )
    t = ctx.settings.timing
    settings = (
        f"SLO: TTFT &le; {ctx.settings.slo_ttft:g} s and mean ITL &le; {ctx.settings.slo_itl * 1000:g} ms; "
        f"request timeout {ctx.settings.request_timeout:g} s; gateway "
        f"{'with flow control' if ctx.settings.flow_control else 'without a queue'}; scrape {t.scrape_interval:g} s, "
        f"fetch {t.fetch_interval:g} s, rate window {t.rate_window:g} s, reconcile {t.reconcile_interval:g} s, "
        f"scale-down stabilization {t.stabilization:g} s; rate scale {ctx.rate_scale:g}"
        + (f"; window {ctx.window[0]:g} s +{ctx.window[1] or 0:g} s" if ctx.window else "")
        + ("; every policy starts with the oracle's first-window mix" if ctx.warm_start else "")
    )
    fleet = "; ".join(
        f"{html.escape(v.name)}: {html.escape(v.accelerator)}, {v.cost}/h, {v.min_replicas}-{v.max_replicas} replicas, "
        f"start-up {v.startup_seconds:g} s"
        for v in ctx.fleet.variants
    )
    attribution = (
        f'<p class="attr">{html.escape(ctx.traffic.attribution)}</p>' if ctx.traffic.attribution else ""
    )
    plan_text = (
        ""
        if plan is None
        else f"<p>Oracle: {len(plan.mixes)} windows of {plan.window:g} s, mixes {html.escape(str(plan.mixes))}.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wva lab: {html.escape(ctx.traffic.source)}</title>
<style>{_CSS}</style></head><body>
<h1>wva lab: {html.escape(ctx.traffic.source)}</h1>
{attribution}
<p>{len(ctx.traffic.arrivals)} requests over {duration:.0f} s of simulated time. Fleet: {html.escape(ctx.fleet.model)} &mdash; {fleet}.</p>
<p>{settings}.</p>
<h2>Results</h2>
<table><tr>{head}</tr>{rows}</table>
{plan_text}
<dl><dt>SLO attainment</dt><dd>requests served within both targets / requests offered (failed and timed-out requests miss).</dd>
<dt>GPU cost</dt><dd>pod lifetimes (creation to deletion, starting pods included) &times; cost per hour.</dd>
<dt>reaction to rises</dt><dd>median time from the start of a load rise to the first scale-up (see docs/lab.md).</dd></dl>
<h2>Over time</h2>
{"".join(charts)}
</body></html>
"""
