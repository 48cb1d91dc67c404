"""The report's charts: every legend entry has room for its whole label, inside the chart, on its own
patch of the row (they were cut at the chart's right edge: "offered Llama-3.1-8", "llama-8b-cheap spe")."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

from services.sandbox import report

SVG = "{http://www.w3.org/2000/svg}"
LABELS = [
    "offered Llama-3.1-8B-Instruct",
    "offered Mixtral-8x7B-Instruct-v0.1",
    "served llama-8b-cheap",
    "served llama-8b-expensive",
    "served mixtral-h100-expensive-variant",
    "llama-8b-cheap spec",
    "llama-8b-cheap ready",
    "llama-8b-expensive spec",
    "llama-8b-expensive ready",
]


def _legend(labels: list[str]) -> tuple[float, list[tuple[float, float, str]]]:
    series = [
        report.Series(label=label, color="#444", points=[(0.0, 1.0), (10.0, float(k))])
        for k, label in enumerate(labels)
    ]
    svg = ET.fromstring(report.chart("t", series, x_max=10.0))
    entries = [
        (float(t.attrib["x"]), float(t.attrib["y"]), t.text or "")
        for t in svg.iter(f"{SVG}text")
        if t.get("class") == "lg"
    ]
    return float(svg.attrib["height"]), entries


def test_every_legend_label_fits_whole_inside_the_chart_without_overlap() -> None:
    height, entries = _legend(LABELS)
    assert [label for _, _, label in entries] == LABELS  # whole labels, in order
    rows: dict[float, list[tuple[float, float]]] = {}
    for x, y, label in entries:
        right = x + len(label) * report.CHAR_WIDTH
        assert right <= report.W, f"{label!r} ends at {right:.0f} of {report.W}"
        assert y + 4 <= height, f"{label!r} below the chart"
        rows.setdefault(y, []).append((x - report.SWATCH - 4, right))
    assert len(rows) >= 2  # this many long labels need more than one row
    for spans in rows.values():
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end < start


def test_the_legend_sits_under_the_plot_and_the_chart_grows_with_it() -> None:
    one_row, entries = _legend(LABELS[:1])
    more_rows, _ = _legend(LABELS)
    ((x, y, _),) = entries
    assert y > report.TOP + report.PLOT_H  # under the plot, not beside it
    assert x < report.W / 2
    assert more_rows > one_row
