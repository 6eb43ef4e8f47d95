"""The benchmarks' pure parts (tests/bench/bench_report.py): percentiles,
ratios, goals and the markdown tables. No timing is asserted anywhere."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_report.py"
spec = importlib.util.spec_from_file_location("bench_report", PATH)
assert spec is not None and spec.loader is not None
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def test_percentile_interpolates_between_ranks_as_numpy_does():
    values = [4.0, 1.0, 3.0, 2.0]
    assert report.percentile(values, 0) == 1.0
    assert report.percentile(values, 100) == 4.0
    assert report.percentile(values, 50) == 2.5
    assert report.percentile(values, 25) == pytest.approx(1.75)
    numbers = [float(n) for n in range(1, 101)]
    assert report.percentile(numbers, 99) == pytest.approx(99.01)


def test_percentile_of_one_value_and_of_none():
    assert report.percentile([7.0], 99) == 7.0
    assert math.isnan(report.percentile([], 50))
    with pytest.raises(ValueError):
        report.percentile([1.0], 101)


def test_latency_summary_is_in_milliseconds():
    summary = report.latency_summary([0.001, 0.002, 0.003])
    assert summary["p50_ms"] == pytest.approx(2.0)
    assert summary["max_ms"] == pytest.approx(3.0)
    assert summary["p99_ms"] == pytest.approx(2.98)
    assert math.isnan(report.latency_summary([])["max_ms"])


def test_ratio_refuses_what_cannot_be_divided():
    assert report.ratio(300.0, 100.0) == 3.0
    assert report.ratio(1.0, 0.0) is None
    assert report.ratio(None, 1.0) is None
    assert report.ratio(1.0, math.nan) is None


def test_goal_met_and_missed_both_ways():
    met = report.goal("serving", "a ÷ b", 3.2, 3.0)
    assert met["met"] is True and met["shortfall"] is None
    missed = report.goal("serving", "a ÷ b", 1.5, 3.0)
    assert missed["met"] is False and missed["shortfall"] == pytest.approx(0.5)
    lower = report.goal("drift", "memory", 0.5, 0.25, higher_is_better=False)
    assert lower["met"] is False and lower["shortfall"] == pytest.approx(1.0)
    assert report.goal("x", "y", None, 1.0)["met"] is None


def test_format_goal_says_the_shortfall():
    row = report.format_goal(report.goal("snapshot", "csv", 0.35, 0.7))
    assert row == ["snapshot", "csv", "0.35x", ">= 0.70x", "missed by 50%"]
    log_cost = report.goal("serving", "log", 0.02, 0.05, higher_is_better=False, unit="%")
    assert report.format_goal(log_cost)[2:] == ["2.0%", "<= 5.0%", "met"]
    assert report.format_goal(report.goal("x", "y", None, 1.0))[4] == "not measured"


def test_markdown_table_escapes_pipes():
    table = report.markdown_table(["a", "b"], [["x|y", 1]])
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| x\\|y | 1 |"]


def test_format_number_keeps_small_figures_readable():
    assert report.format_number(1234.5) == "1,234"
    assert report.format_number(123.4) == "123"
    assert report.format_number(1.234) == "1.23"
    assert report.format_number(None) == "n/a"
    assert report.format_number(math.inf) == "n/a"
    assert report.format_ratio(None) == "n/a"


def test_render_markdown_has_every_section():
    results = {
        "mode": "quick",
        "machine": {"cpu": "CPU", "cores": 2, "memory_gib": 24, "kernel": "6", "python": "3.11"},
        "goals": [report.goal("serving", "rf", 3.5, 3.0)],
        "serving": {
            "runs": [
                {
                    "model": "rf",
                    "batch": 1,
                    "server": "flywheel v2",
                    "rps": 1000.0,
                    "p50_ms": 1.0,
                    "p99_ms": 2.0,
                    "errors": 0,
                }
            ]
        },
        "drift": {
            "scenarios": [
                {
                    "name": "no change",
                    "expected": "NoDrift",
                    "flywheel": {"verdict": "NoDrift", "seconds": 1.0, "peak_rss_mib": 100.0},
                    "evidently": {"verdict": "NoDrift", "seconds": 5.0, "peak_rss_mib": 400.0},
                }
            ]
        },
        "snapshot": {
            "runs": [
                {
                    "format": "csv",
                    "bytes": 2**20,
                    "flywheel_seconds": 1.0,
                    "sha256sum_seconds": 0.5,
                    "flywheel_mib_s": 1.0,
                    "sha256sum_mib_s": 2.0,
                    "ratio": 0.5,
                }
            ]
        },
    }
    text = report.render_markdown(results)
    for heading in ("### Goals", "### Serving", "### Drift check", "### Dataset snapshot"):
        assert heading in text
    assert "| serving | rf | 3.50x | >= 3.00x | met |" in text
    assert "| rf | 1 | flywheel v2 | 1,000 | 1.00 | 2.00 | 0 |" in text
    assert "mode: quick" in text


def scale_side(seconds: float, p50: float, p99: float, **more) -> dict:
    return {
        "objects": 1000,
        "seconds": seconds,
        "per_second": 1000 / seconds,
        "latency": {"p50_ms": p50 * 1000, "p99_ms": p99 * 1000},
        "api_requests_per_object": 3.0,
        **more,
    }


def test_the_operator_table_times_the_raw_client_from_the_burst_too():
    """The raw client's own creates take ~0.5 s an object; all 1,000 handed
    over at once, the last waits for the 999 before it: both are shown."""
    burst = {"p50_ms": 6_000.0, "p99_ms": 11_900.0}
    kind = {
        "operator": scale_side(19.5, 4.85, 8.05),
        "raw": scale_side(12.0, 0.09, 1.43, latency_from_burst=burst),
    }
    scale = {
        "objects_per_kind": 1000,
        "trainingruns": kind,
        "inferenceservices": kind,
        "operator_peak_rss_mib": 200.0,
        "quiet": {
            "seconds": 60,
            "parent_changes": 0,
            "operator_requests": {"kubernetes_writes": 0, "kubernetes_total": 10},
        },
    }
    text = report.operator_table(scale)
    assert "| trainingruns | raw client | 1000 | 12.00 | 83.3 | 0.09 | 1.43 | 3.0 |" in text
    burst_row = "| raw client, timed from the burst | 1000 | 12.00 | 83.3 | 6.00 | 11.90 | 3.0 |"
    assert f"| trainingruns {burst_row}" in text
    # Results recorded before the burst was timed still render, without that row.
    del kind["raw"]["latency_from_burst"]
    assert "timed from the burst" not in report.operator_table(scale)


def serving_module():
    """tests/bench/serving.py, whose modules import each other by plain name."""
    import sys

    sys.path.insert(0, str(PATH.parent))
    try:
        import serving
    finally:
        sys.path.remove(str(PATH.parent))
    return serving


def test_the_two_sides_of_the_log_take_turns_going_first():
    serving = serving_module()
    labels = [serving.PLAIN, serving.LOGGED, "mlflow /invocations"]
    assert serving.in_turn(labels, 0) == labels
    assert serving.in_turn(labels, 1) == [serving.LOGGED, serving.PLAIN, "mlflow /invocations"]
    assert serving.in_turn(labels, 2) == labels


def test_the_logs_cost_is_the_median_loss_of_its_back_to_back_pairs():
    serving = serving_module()
    logged = {"rps": 900.0, "log_losses": [0.09, 0.03, -0.01, 0.04, 0.02]}
    assert serving.log_loss(logged, 1000.0) == pytest.approx(0.03)
    assert serving.log_loss({"rps": 1010.0, "log_losses": [-0.02, -0.01, 0.0]}, 1000.0) == 0.0
    # Results recorded before the pairs: the rounds' medians.
    assert serving.log_loss({"rps": 940.0}, 1000.0) == pytest.approx(0.06)
    assert serving.log_loss(None, 1000.0) is None
