"""Evidently's drift tests on small synthetic frames: per-column scores and
flags, the share of drifted columns against the threshold, the statistical
test and its threshold set by the user, tests that cannot apply, and the
same results as Evidently's own DataDriftPreset report on the same frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from flywheel.workloads.drift_errors import DriftError
from flywheel.workloads.drift_report import (
    check_stat_test,
    finite,
    run_drift,
    stat_tests,
    verdict,
)

KINDS = {"a": "num", "b": "num", "c": "num", "d": "cat"}


def frames(shift: dict[str, float], rows: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)

    def frame(moved: bool) -> pd.DataFrame:
        data = {n: rng.normal(size=rows) + (shift.get(n, 0) if moved else 0) for n in "abc"}
        # The same counts on both sides: a categorical column that cannot drift.
        data["d"] = rng.permutation(np.resize(["x", "y", "z"], rows)).astype(object)
        return pd.DataFrame(data)

    return frame(False), frame(True)


@pytest.fixture(scope="module")
def half_drifted():
    reference, current = frames({"a": 3.0, "b": 2.0})
    return run_drift(reference, current, KINDS, drift_share=0.5)


def test_verdict_is_share_at_or_above_threshold():
    assert verdict(0.5, 0.5) == "Drift"
    assert verdict(0.49, 0.5) == "NoDrift"
    assert verdict(1.0, 1.0) == "Drift"
    assert verdict(0.0, 0.1) == "NoDrift"


def test_shifted_columns_drift_and_the_share_counts_them(half_drifted):
    by_name = {f.name: f for f in half_drifted.features}
    assert [f.name for f in half_drifted.features] == list(KINDS)
    assert {n for n, f in by_name.items() if f.drifted} == {"a", "b"}
    assert half_drifted.share == 0.5 and half_drifted.drifted == 2
    assert verdict(half_drifted.share, 0.5) == "Drift"
    assert verdict(half_drifted.share, 0.75) == "NoDrift"
    # Evidently chose the tests: K-S p-values for numbers, a categorical test for "d".
    assert by_name["a"].method == "K-S p_value" and by_name["a"].score < 0.05
    assert by_name["c"].score > 0.05 and by_name["c"].threshold == 0.05
    assert by_name["d"].method and "K-S" not in by_name["d"].method


def test_the_report_is_html_and_the_document_is_json(half_drifted):
    page = half_drifted.html.decode()
    assert page.lower().startswith("<!doctype html") and "Data drift: Drift" in page
    assert all(f"<td>{name}</td>" in page for name in KINDS)
    document = json.loads(json.dumps(half_drifted.report, allow_nan=False))  # plain JSON
    assert [c["column"] for c in document["columns"]] == list(KINDS)
    assert document["driftedCount"] == 2 and document["share"] == 0.5
    by_name = {c["column"]: c for c in document["columns"]}
    assert by_name["d"]["reference"]["y"] == by_name["d"]["current"]["y"] == [200, 200, 200]
    assert sum(by_name["a"]["current"]["y"]) == 600  # every row in a bin


@pytest.mark.parametrize("method", [None, "psi"])
def test_the_same_results_as_evidentlys_preset(method):
    """The check runs the preset's column tests without the preset's report:
    scores, flags, methods and the share must be the preset's own."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference, current = frames({"a": 3.0, "b": 0.15}, rows=3000, seed=7)
    ours = run_drift(reference, current, KINDS, method=method)
    definition = DataDefinition(numerical_columns=["a", "b", "c"], categorical_columns=["d"])
    snapshot = Report([DataDriftPreset(method=method)], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    document = json.loads(snapshot.json())
    scores, methods, flags = {}, {}, {}
    for metric in document["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            scores[config["column"]] = metric["value"]
            methods[config["column"]] = (config["method"], config["threshold"])
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = metric["value"]["share"]
    for test in document["tests"]:
        params = test["metric_config"]["params"]
        if params["type"].endswith(":ValueDrift"):
            flags[params["column"]] = test["status"] == "FAIL"
    assert {f.name: f.score for f in ours.features} == pytest.approx(scores, rel=1e-12)
    assert {f.name: (f.method, f.threshold) for f in ours.features} == methods
    assert {f.name: f.drifted for f in ours.features} == flags
    assert ours.share == share and "a" in {n for n, drifted in flags.items() if drifted}


def test_unshifted_data_does_not_drift():
    reference, current = frames({}, seed=3)
    outcome = run_drift(reference, current, KINDS, drift_share=0.5)
    assert outcome.share < 0.5 and verdict(outcome.share, 0.5) == "NoDrift"


def test_a_chosen_test_and_threshold_apply_to_every_column():
    reference, current = frames({"a": 0.3})
    strict = run_drift(reference, current, KINDS, method="psi", stat_threshold=0.01)
    lenient = run_drift(reference, current, KINDS, method="psi", stat_threshold=5.0)
    assert {f.method for f in strict.features} == {"psi"}
    assert {f.threshold for f in strict.features} == {0.01}
    assert [f.score for f in strict.features] == [f.score for f in lenient.features]
    assert next(f for f in strict.features if f.name == "a").drifted  # psi is a distance
    assert not any(f.drifted for f in lenient.features) and lenient.share == 0.0


def test_distance_tests_on_numbers_only():
    reference, current = frames({"a": 2.0}, rows=5000)  # the default threshold 0.1 is near noise
    kinds = {"a": "num", "b": "num"}
    outcome = run_drift(reference, current, kinds, method="wasserstein", drift_share=0.5)
    assert [(f.name, f.method, f.drifted) for f in outcome.features] == [
        ("a", "wasserstein", True),
        ("b", "wasserstein", False),
    ]
    assert verdict(outcome.share, 0.5) == "Drift"


def test_unknown_or_misfit_tests_fail_before_reading():
    assert {"psi", "ks", "wasserstein", "jensenshannon", "chisquare"} <= set(stat_tests())
    check_stat_test(None, KINDS)
    check_stat_test("psi", KINDS)
    with pytest.raises(DriftError) as raised:
        check_stat_test("kolmogorov", KINDS)
    assert raised.value.reason == "UnknownStatTest" and "ks" in raised.value.message
    with pytest.raises(DriftError) as raised:
        check_stat_test("wasserstein", KINDS)
    assert raised.value.reason == "UnknownStatTest"
    assert "numerical columns only; not to d (categorical)" in raised.value.message


def test_numbers_json_cannot_carry_are_null():
    assert finite("inf") is None and finite(None) is None and finite(float("nan")) is None
    assert finite(np.float64(0.25)) == 0.25
