"""The narrator's pure parts: how `flywheel demo` words what it sees."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd

from flywheel import demo


def test_clock_counts_minutes_and_seconds():
    assert demo.clock(0) == "[00:00]"
    assert demo.clock(12.9) == "[00:12]"
    assert demo.clock(185) == "[03:05]"


def test_versions_are_shortened_to_eight_characters():
    assert demo.short("8ae78341b2dbd62a39c6") == "8ae78341…"
    assert demo.short("v1") == "v1"
    assert demo.short(None) == "?"


def test_dataset_line():
    status = {"version": "3f2a9c0d11", "rows": 150, "validation": {"passed": True}}
    assert (
        demo.dataset_line("iris", status) == "Dataset iris: version 3f2a9c0d…, 150 rows, validated"
    )
    status["validation"] = {"passed": False}
    assert demo.dataset_line("iris", status).endswith("validation failed")


def test_model_and_service_lines():
    line = demo.model_line(
        "iris-v1",
        {"modelName": "iris"},
        {"registryVersion": "2", "aliases": ["candidate"], "phase": "Servable"},
    )
    assert (
        line == "ModelVersion iris-v1: registered as iris version 2 (aliases: candidate), Servable"
    )
    status = {"servingModelVersion": "iris-v1", "stable": {"replicas": 2, "readyReplicas": 2}}
    assert (
        demo.service_line("iris", status) == "InferenceService iris: Ready, iris-v1 on 2/2 replicas"
    )


def test_traffic_line_says_all_200_only_when_it_is_so():
    assert demo.traffic_line(Counter({200: 104})) == "requests served: 104, all 200"
    mixed = demo.traffic_line(Counter({200: 10, 503: 2, 0: 1}))
    assert mixed == "requests served: 13 (no connection: 1, 200: 10, 503: 2)"
    assert demo.traffic_line(Counter()) == "requests served: 0"


def test_drift_line_names_the_drifted_features_and_the_report():
    drift = {
        "result": "Drift",
        "share": 0.75,
        "features": [
            {"name": "petal_length", "drifted": True},
            {"name": "sepal_width", "drifted": False},
            {"name": "petal_width", "drifted": True},
        ],
        "reportUri": "s3://b/drift/report.html",
    }
    assert demo.drift_line(drift) == (
        "drift detected: 75% of features drifted (petal_length, petal_width); "
        "report s3://b/drift/report.html"
    )
    quiet = {"result": "InsufficientData", "job": "iris-drift-1", "message": "only 0 rows"}
    assert demo.drift_line(quiet) == "drift check iris-drift-1: InsufficientData (only 0 rows)"
    assert demo.drift_line({"result": "NoDrift", "job": "j"}) == "drift check j: NoDrift"


def test_condition_echo_events_are_left_out():
    assert demo.event_line("Promoted", "Ready=True: promoted x") is None
    assert demo.event_line("Promoted", "x: check passed at step 1 (50%): promoting") == (
        "  event Promoted: x: check passed at step 1 (50%): promoting"
    )
    assert demo.event_line("CanaryStarted", "x: weight=50") == "  event CanaryStarted: x: weight=50"


def test_shifted_moves_the_measurements_and_keeps_the_original():
    frame = pd.DataFrame({c: [1.0, 2.0] for c in demo.FEATURES})
    moved = demo.shifted(frame)
    assert list(moved["petal_length"]) == [4.0, 5.0]
    assert list(moved["petal_width"]) == [2.5, 3.5]
    assert list(moved["sepal_length"]) == [3.0, 4.0]
    assert list(moved["sepal_width"]) == [1.0, 2.0]
    assert list(frame["petal_length"]) == [1.0, 2.0]


def test_request_bodies_split_rows_as_mlflow_dataframe_split():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})
    bodies = [json.loads(b) for b in demo.request_bodies(frame)]
    assert bodies == [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 4.0], [2.0, 5.0]]}},
        {"dataframe_split": {"columns": ["a", "b"], "data": [[3.0, 6.0]]}},
    ]


def test_a_stall_says_what_was_awaited_and_where_to_look():
    message = demo.stalled_message("a drift check", 300, ["kubectl describe x", "log: /l"])
    assert message == (
        "timed out after 300s waiting for a drift check.\nLook at:\n  kubectl describe x\n  log: /l"
    )
