"""report.html: every column's row, names escaped, and categories matched by
value between the sides (Evidently lists each side's counts in its own order)."""

from __future__ import annotations

from flywheel.workloads.drift_html import aligned, render_report


def document(columns):
    drifted = sum(c["drifted"] for c in columns)
    return {
        "evidently": "0.7",
        "driftShare": 0.5,
        "share": drifted / len(columns),
        "driftedCount": drifted,
        "columns": columns,
    }


def column(name, drifted, reference=None, current=None):
    return {
        "column": name,
        "kind": "categorical",
        "method": "Jensen-Shannon distance",
        "threshold": 0.1,
        "score": 0.3 if drifted else 0.01,
        "drifted": drifted,
        "reference": reference,
        "current": current,
    }


def test_categories_are_matched_by_value_and_missing_ones_count_zero():
    labels, counts = aligned({"x": ["b", "a"], "y": [5, 3]}, {"x": ["a", "c"], "y": [7, 1]})
    assert labels == ["b", "a", "c"]
    assert counts == [[5, 3, 0], [0, 7, 1]]


def test_numbers_share_the_bin_edges():
    labels, counts = aligned(
        {"x": [0.0, 1.0, 2.0], "y": [4, 6]}, {"x": [0.0, 1.0, 2.0], "y": [1, 9]}
    )
    assert labels == ["0 to 1", "1 to 2"] and counts == [[4, 6], [1, 9]]


def test_the_page_names_the_verdict_and_escapes_column_names():
    page = render_report(
        document(
            [
                column("<script>", True, {"x": ["a"], "y": [1]}, {"x": ["a"], "y": [2]}),
                column("plain", False),
            ]
        )
    ).decode()
    assert page.startswith("<!doctype html") and "Data drift: Drift" in page
    assert "1 of 2 columns drifted" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<svg") == 1  # the column without histograms has none
