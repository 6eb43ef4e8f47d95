"""The pure part of the benchmarks: percentiles, ratios, goals and the
markdown tables. No I/O, no timing: tests/unit/test_bench_report.py covers it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between the
    closest ranks (numpy's default "linear" method); NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not in 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of request latencies, in milliseconds."""
    ordered = sorted(seconds)
    return {
        "p50_ms": percentile(ordered, 50) * 1000,
        "p90_ms": percentile(ordered, 90) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": (ordered[-1] * 1000) if ordered else math.nan,
    }


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs; None when either is missing, not finite, or theirs is 0."""
    if ours is None or theirs is None:
        return None
    if not (math.isfinite(ours) and math.isfinite(theirs)) or theirs == 0:
        return None
    return ours / theirs


def goal(
    benchmark: str,
    comparison: str,
    measured: float | None,
    target: float,
    *,
    higher_is_better: bool = True,
    unit: str = "x",
    note: str = "",
) -> dict[str, Any]:
    """One goal row: met when `measured` is on the right side of `target`;
    `shortfall` says by how much it is missed (a share of the target)."""
    if measured is None:
        met, shortfall = None, None
    elif higher_is_better:
        met = measured >= target
        shortfall = None if met or not target else (target - measured) / target
    else:
        met = measured <= target
        # A target of 0 (no writes at all) has no relative shortfall.
        shortfall = None if met or not target else (measured - target) / target
    return {
        "benchmark": benchmark,
        "comparison": comparison,
        "measured": measured,
        "target": target,
        "higher_is_better": higher_is_better,
        "unit": unit,
        "met": met,
        "shortfall": shortfall,
        "note": note,
    }


def format_number(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def format_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def format_measure(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "x":
        return format_ratio(value)
    if unit == "%":
        return f"{value * 100:.1f}%"
    return f"{format_number(value)} {unit}".strip()


def format_goal(row: dict[str, Any]) -> list[str]:
    sign = ">=" if row["higher_is_better"] else "<="
    target = format_measure(row["target"], row["unit"])
    if row["met"] is None:
        verdict = "not measured"
    elif row["met"]:
        verdict = "met"
    elif row["shortfall"] is None:
        verdict = "missed"
    else:
        verdict = f"missed by {row['shortfall'] * 100:.0f}%"
    return [
        row["benchmark"],
        row["comparison"],
        format_measure(row["measured"], row["unit"]),
        f"{sign} {target}",
        verdict,
    ]


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; `|` inside cells is escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "|" + "|".join(" --- " for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def goals_table(goals: Iterable[dict[str, Any]]) -> str:
    return markdown_table(
        ["Benchmark", "Comparison", "Measured", "Goal", "Result"],
        [format_goal(g) for g in goals],
    )


def serving_table(runs: Iterable[dict[str, Any]]) -> str:
    rows = []
    for run in runs:
        rows.append(
            [
                run["model"],
                run["batch"],
                run["server"],
                format_number(run.get("rps"), 0),
                format_number(run.get("p50_ms")),
                format_number(run.get("p99_ms")),
                run.get("errors", 0),
            ]
        )
    return markdown_table(
        ["Model", "Batch", "Server", "Requests/s", "p50 ms", "p99 ms", "Errors"], rows
    )


def operator_table(scale: dict[str, Any]) -> str:
    """One row per kind and side: the raw client is the bound. Its second row
    times each object from the moment all were handed over at once."""
    rows = []
    sides = (
        ("operator", "latency", "flywheel operator"),
        ("raw", "latency", "raw client"),
        ("raw", "latency_from_burst", "raw client, timed from the burst"),
    )
    for kind in ("trainingruns", "inferenceservices"):
        for side, timing, label in sides:
            figures = scale[kind][side]
            if timing not in figures:  # results from before the burst timing
                continue
            rows.append(
                [
                    kind,
                    label,
                    figures["objects"],
                    format_number(figures["seconds"]),
                    format_number(figures["per_second"], 1),
                    format_number(figures[timing]["p50_ms"] / 1000),
                    format_number(figures[timing]["p99_ms"] / 1000),
                    format_number(figures["api_requests_per_object"], 1),
                ]
            )
    quiet = scale["quiet"]
    return (
        markdown_table(
            [
                "Kind",
                "Side",
                "Objects",
                "Seconds",
                "Objects/s",
                "p50 create->child s",
                "p99 create->child s",
                "API requests/object",
            ],
            rows,
        )
        + f"\n\nOperator peak RSS {format_number(scale['operator_peak_rss_mib'], 0)} MiB at "
        f"{2 * scale['objects_per_kind']} objects"
        + (
            f", at most {scale['operator_peak_apiserver_connections']} connections to the "
            "apiserver at once"
            if scale.get("operator_peak_apiserver_connections")
            else ""
        )
        + "; once converged, "
        f"{quiet['operator_requests']['kubernetes_writes']} writes by the operator and "
        f"{quiet['parent_changes']} changes to the parents in {quiet['seconds']} s "
        f"({quiet['operator_requests']['kubernetes_total']} requests in all)."
    )


def render_markdown(results: dict[str, Any]) -> str:
    """The summary: goals first, then each benchmark's own figures."""
    parts = ["### Goals (ratios measured in the same run on the same machine)", ""]
    parts.append(goals_table(results.get("goals", [])))
    serving = results.get("serving")
    if serving and serving.get("runs"):
        parts += ["", "### Serving", "", serving_table(serving["runs"])]
    drift = results.get("drift")
    if drift and drift.get("scenarios"):
        rows = [
            [
                s["name"],
                s["expected"],
                s["flywheel"]["verdict"],
                s["evidently"]["verdict"],
                format_number(s["flywheel"]["seconds"]),
                format_number(s["evidently"]["seconds"]),
                format_number(s["flywheel"]["peak_rss_mib"], 0),
                format_number(s["evidently"]["peak_rss_mib"], 0),
            ]
            for s in drift["scenarios"]
        ]
        parts += [
            "",
            "### Drift check",
            "",
            markdown_table(
                [
                    "Scenario",
                    "Expected",
                    "flywheel",
                    "Evidently",
                    "flywheel s",
                    "Evidently s",
                    "flywheel MiB",
                    "Evidently MiB",
                ],
                rows,
            ),
        ]
    snapshot = results.get("snapshot")
    if snapshot and snapshot.get("runs"):
        rows = [
            [
                r["format"],
                format_number(r["bytes"] / 2**20, 0),
                format_number(r["flywheel_seconds"]),
                format_number(r["sha256sum_seconds"]),
                format_number(r["flywheel_mib_s"], 0),
                format_number(r["sha256sum_mib_s"], 0),
                format_ratio(r["ratio"]),
            ]
            for r in snapshot["runs"]
        ]
        parts += [
            "",
            "### Dataset snapshot",
            "",
            markdown_table(
                [
                    "Format",
                    "MiB",
                    "flywheel s",
                    "sha256sum s",
                    "flywheel MiB/s",
                    "sha256sum MiB/s",
                    "Ratio",
                ],
                rows,
            ),
        ]
    scale = results.get("operator_scale")
    if scale and scale.get("trainingruns"):
        parts += ["", "### Operator scale", "", operator_table(scale)]
    machine = results.get("machine")
    if machine:
        parts += [
            "",
            f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, "
            f"{machine.get('memory_gib')} GiB, Linux {machine.get('kernel')}, "
            f"Python {machine.get('python')}; mode: {results.get('mode')}.",
        ]
    return "\n".join(parts) + "\n"
