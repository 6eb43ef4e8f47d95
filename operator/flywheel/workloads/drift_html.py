"""report.html of a drift check: one self-contained page, no scripts.

The share of drifted columns, then a row per column: Evidently's test, its
threshold and score, the flag, and both sides' histograms (Evidently's bins)
as inline SVG, reference grey and current blue, each side as shares of its
rows so samples of different sizes compare.
"""

from __future__ import annotations

import html
from typing import Any

WIDTH, HEIGHT = 240, 60
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.drifted { color: #b00020; font-weight: 600; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }
"""


def render_report(document: dict[str, Any]) -> bytes:
    share, threshold = document["share"], document["driftShare"]
    verdict = "Drift" if share >= threshold else "NoDrift"
    rows = "\n".join(column_row(c) for c in document["columns"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flywheel drift check: {verdict}</title>
<style>{STYLE}</style></head>
<body>
<h1>Data drift: {verdict}</h1>
<p>{document["driftedCount"]} of {len(document["columns"])} columns drifted
(share {share:.3f}; drift at &ge; {threshold:g}).
Tests: Evidently {html.escape(str(document["evidently"]))}.</p>
<p class="legend">Histograms:<span style="background:#999"></span>reference
<span style="background:#1f77b4"></span>current</p>
<table>
<tr><th>column</th><th>kind</th><th>test</th><th>threshold</th><th>score</th>
<th>drifted</th><th>distribution</th></tr>
{rows}
</table>
</body></html>
"""
    return page.encode()


def column_row(column: dict[str, Any]) -> str:
    drifted = column["drifted"]
    return (
        f"<tr><td>{html.escape(str(column['column']))}</td>"
        f"<td>{column['kind']}</td>"
        f"<td>{html.escape(str(column['method']))}</td>"
        f"<td class='num'>{number(column['threshold'])}</td>"
        f"<td class='num'>{number(column['score'])}</td>"
        f"<td class='{'drifted' if drifted else ''}'>{'yes' if drifted else 'no'}</td>"
        f"<td>{histograms(column.get('reference'), column.get('current'))}</td></tr>"
    )


def number(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value:.4g}"


def histograms(reference: dict[str, list] | None, current: dict[str, list] | None) -> str:
    """Both sides' bars side by side in one SVG; bin labels as tooltips."""
    if not reference or not current:
        return ""
    labels, counts = aligned(reference, current)
    sides = [shares(c) for c in counts]
    bins = max(len(sides[0]), len(sides[1]))
    if not bins:
        return ""
    tallest = max(max(s, default=0.0) for s in sides) or 1.0
    slot = WIDTH / bins
    bars = []
    for side, colour in zip(sides, ("#999", "#1f77b4"), strict=True):
        offset = 0.0 if colour == "#999" else slot / 2
        for i, value in enumerate(side):
            height = HEIGHT * value / tallest
            label = html.escape(labels[i] if i < len(labels) else "")
            bars.append(
                f"<rect x='{i * slot + offset:.1f}' y='{HEIGHT - height:.1f}' "
                f"width='{slot / 2:.1f}' height='{height:.1f}' fill='{colour}'>"
                f"<title>{label}: {value:.1%}</title></rect>"
            )
    return (
        f"<svg width='{WIDTH}' height='{HEIGHT}' viewBox='0 0 {WIDTH} {HEIGHT}'>"
        + "".join(bars)
        + "</svg>"
    )


def aligned(
    reference: dict[str, list], current: dict[str, list]
) -> tuple[list[str], list[list[float]]]:
    """Bin labels and each side's counts per bin. Numbers share Evidently's
    bin edges; categories come in each side's own order, so they are matched
    by value (values only one side has get a zero on the other)."""
    x = reference["x"]
    if len(x) == len(reference["y"]) + 1:  # bin edges
        labels = [f"{x[i]:.4g} to {x[i + 1]:.4g}" for i in range(len(reference["y"]))]
        return labels, [reference["y"], current["y"]]
    by_side = [
        {str(k): v for k, v in zip(side["x"], side["y"], strict=True)}
        for side in (reference, current)
    ]
    labels = list(dict.fromkeys([*by_side[0], *by_side[1]]))
    return labels, [[side.get(label, 0) for label in labels] for side in by_side]


def shares(counts: list[float]) -> list[float]:
    total = sum(counts) or 1
    return [c / total for c in counts]
