"""`flywheel drift-check` end to end on local files: the environment contract,
the three verdicts, the files it writes, the errors and their exit codes, and
the termination message's size. S3 and MLflow: tests/integration/test_drift_check.py."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from flywheel.workloads.drift import (
    drift_check_command,
    render,
    run_drift_check,
    settings_from_env,
)
from flywheel.workloads.drift_errors import DRIFT_EXIT_CODES, RETRYABLE, DriftError
from flywheel.workloads.termination import LIMIT_BYTES

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
NOW = datetime(2026, 3, 1, 14, 20, tzinfo=UTC)


def iris() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.data.set_axis(FEATURES, axis=1)
    frame["species"] = bunch.target_names[bunch.target]
    return frame


def write_logs(root: Path, frame: pd.DataFrame, moment: datetime, version: str = "v1") -> None:
    """Rows as flywheel serve logs them, one file per call."""
    hour = moment.strftime("%Y-%m-%dT%H")
    folder = root / version / f"hour={hour}"
    folder.mkdir(parents=True, exist_ok=True)
    rows = len(frame)
    table = pa.table(
        {
            **{name: pa.array(frame[name].to_numpy(np.float64)) for name in FEATURES},
            "_flywheel_time": pa.array([moment] * rows, pa.timestamp("ms", tz="UTC")),
            "_flywheel_prediction": pa.array(frame["species"].astype(str)),
            "_flywheel_model_version": pa.array([version] * rows),
        }
    )
    pq.write_table(table, folder / f"pod-1-{len(list(folder.iterdir())):06d}.parquet")


@pytest.fixture
def setup(tmp_path):
    reference = tmp_path / "datasets" / "iris"
    reference.mkdir(parents=True)
    iris().to_csv(reference / "iris.csv", index=False)
    logs = tmp_path / "inference-logs" / "ns" / "iris"
    env = {
        "FLYWHEEL_REFERENCE_URI": reference.as_uri(),
        "FLYWHEEL_REFERENCE_FORMAT": "csv",
        "FLYWHEEL_REFERENCE_VERSION": "ab" * 32,
        "FLYWHEEL_CURRENT_URI": logs.as_uri(),
        "FLYWHEEL_WINDOW": "1h",
        "FLYWHEEL_NOW": NOW.isoformat(),
        "FLYWHEEL_TARGET_COLUMN": "species",
        "FLYWHEEL_REPORT_URI": (tmp_path / "reports" / "check-1").as_uri(),
    }
    return env, logs, tmp_path / "reports" / "check-1"


def current_like_reference(rows: int, seed: int = 1) -> pd.DataFrame:
    return iris().sample(rows, replace=True, random_state=seed).reset_index(drop=True)


def test_reference_like_traffic_is_no_drift(setup):
    env, logs, reports = setup
    write_logs(logs, current_like_reference(200), NOW - timedelta(minutes=30))
    write_logs(logs, current_like_reference(200, seed=2), NOW - timedelta(minutes=10), "v2")
    write_logs(logs, current_like_reference(500), NOW - timedelta(hours=2))  # outside

    message, code = run_drift_check(env)

    assert code == 0, message
    assert message["ok"] is True and message["result"] == "NoDrift"
    assert message["share"] < 0.5 and message["threshold"] == 0.5
    assert {f["name"] for f in message["features"]} == set(FEATURES)
    assert all(set(f) == {"name", "score", "drifted", "method"} for f in message["features"])
    assert message["rows"] == {"reference": 150, "current": 400}
    assert message["sampled"] == {"reference": None, "current": None, "seed": 0}
    assert message["window"] == {"start": "2026-03-01T13:20:00Z", "end": "2026-03-01T14:20:00Z"}
    assert message["reportUri"] == env["FLYWHEEL_REPORT_URI"] + "/report.html"
    assert message["resultUri"] == env["FLYWHEEL_REPORT_URI"] + "/result.json"
    assert message["mlflowRunId"] is None and "mlflowError" not in message
    assert b"<html" in (reports / "report.html").read_bytes()[:5000].lower()
    stored = json.loads((reports / "result.json").read_text())
    assert stored["result"] == "NoDrift" and stored["rows"] == message["rows"]
    assert stored["reference"]["version"] == "ab" * 32
    assert (
        stored["checkedFeatures"] == FEATURES
        and [c["column"] for c in stored["evidently"]["columns"]] == FEATURES
    )


def test_shifted_traffic_is_drift_naming_the_features(setup):
    env, logs, reports = setup
    shifted = current_like_reference(300)
    shifted["petal_length"] += 3
    shifted["petal_width"] += 2
    write_logs(logs, shifted, NOW - timedelta(minutes=5))

    message, code = run_drift_check(env)

    assert code == 0 and message["result"] == "Drift"
    assert message["share"] == 0.5
    drifted = [f for f in message["features"] if f["drifted"]]
    assert [f["name"] for f in drifted] == ["petal_length", "petal_width"]  # drifted first
    assert all(f["score"] < 0.05 and f["method"] == "K-S p_value" for f in drifted)
    assert json.loads((reports / "result.json").read_text())["driftedCount"] == 2


def test_the_users_test_threshold_and_features(setup):
    env, logs, _ = setup
    shifted = current_like_reference(300)
    shifted["petal_length"] += 3
    write_logs(logs, shifted, NOW - timedelta(minutes=5))
    env |= {
        "FLYWHEEL_FEATURES": json.dumps(["petal_length", "sepal_width"]),
        "FLYWHEEL_STAT_TEST": "psi",
        "FLYWHEEL_STAT_TEST_THRESHOLD": "0.2",
        "FLYWHEEL_DRIFT_THRESHOLD": "0.5",
    }

    message, code = run_drift_check(env)

    assert code == 0 and message["result"] == "Drift" and message["share"] == 0.5
    assert [(f["name"], f["method"], f["drifted"]) for f in message["features"]] == [
        ("petal_length", "psi", True),
        ("sepal_width", "psi", False),
    ]


def test_large_sides_are_sampled_with_the_seed(setup):
    env, logs, reports = setup
    write_logs(logs, current_like_reference(700), NOW - timedelta(minutes=5))
    env |= {"FLYWHEEL_MAX_ROWS": "120", "FLYWHEEL_SEED": "42"}

    first, code = run_drift_check(env)
    stored = (reports / "result.json").read_text()
    second, _ = run_drift_check(env)

    assert code == 0
    assert first["rows"] == {"reference": 150, "current": 700}
    assert first["sampled"] == {"reference": 120, "current": 120, "seed": 42}
    assert first["features"] == second["features"]  # the same sample, the same scores
    assert json.loads(stored)["maxRows"] == 120


def test_too_few_rows_is_insufficient_data_not_drift(setup):
    env, logs, reports = setup
    shifted = current_like_reference(40)
    shifted["petal_length"] += 3
    write_logs(logs, shifted, NOW - timedelta(minutes=5))

    message, code = run_drift_check(env)

    assert code == 0 and message["result"] == "InsufficientData"
    assert message["rows"] == {"reference": None, "current": 40}
    assert message["features"] == [] and message["reportUri"] is None
    assert not (reports / "report.html").exists()
    stored = json.loads((reports / "result.json").read_text())
    assert (stored["result"], stored["insufficient"], stored["minRows"]) == (
        "InsufficientData",
        "current",
        100,
    )


def test_nothing_logged_yet_is_insufficient_data(setup):
    env, _, _ = setup
    message, code = run_drift_check(env | {"FLYWHEEL_MIN_ROWS": "1"})
    assert code == 0 and message["result"] == "InsufficientData"
    assert message["rows"]["current"] == 0


def error_of(env: dict[str, str]) -> tuple[str, str, int]:
    message, code = run_drift_check(env)
    assert message["ok"] is False, message
    return message["error"]["reason"], message["error"]["message"], code


def test_an_unknown_feature_is_named_with_the_available_ones(setup):
    env, logs, _ = setup
    write_logs(logs, current_like_reference(200), NOW - timedelta(minutes=5))
    reason, text, code = error_of(env | {"FLYWHEEL_FEATURES": '["petal_length", "colour"]'})
    assert (reason, code) == ("UnknownFeature", 47)
    assert "'colour'" in text and "sepal_length, sepal_width, petal_length, petal_width" in text


def test_errors_have_their_reasons_and_codes(setup, tmp_path):
    env, logs, _ = setup
    write_logs(logs, current_like_reference(200), NOW - timedelta(minutes=5))
    assert error_of(env | {"FLYWHEEL_STAT_TEST": "nope"})[::2] == ("UnknownStatTest", 48)
    assert error_of(env | {"FLYWHEEL_STAT_TEST": "chisquare"})[::2] == ("UnknownStatTest", 48)
    assert error_of(env | {"FLYWHEEL_WINDOW": "an hour"})[::2] == ("BadConfig", 40)
    assert error_of(env | {"FLYWHEEL_DRIFT_THRESHOLD": "1.5"})[::2] == ("BadConfig", 40)
    assert error_of(env | {"FLYWHEEL_FEATURES": "petal_length"})[::2] == ("BadConfig", 40)
    assert error_of(env | {"FLYWHEEL_NOW": "yesterday"})[::2] == ("BadConfig", 40)
    assert error_of(env | {"FLYWHEEL_REPORT_URI": "http://x/y"})[::2] == ("BadConfig", 40)
    missing = {k: v for k, v in env.items() if k != "FLYWHEEL_CURRENT_URI"}
    assert error_of(missing)[:2] == ("BadConfig", "FLYWHEEL_CURRENT_URI is not set")
    gone = (tmp_path / "gone").as_uri()
    assert error_of(env | {"FLYWHEEL_REFERENCE_URI": gone})[::2] == ("ReferenceUnreachable", 41)
    other = tmp_path / "other"
    other.mkdir()
    pd.DataFrame({"colour": ["red"], "species": ["x"]}).to_csv(other / "o.csv", index=False)
    assert error_of(env | {"FLYWHEEL_REFERENCE_URI": other.as_uri()})[::2] == (
        "NoCommonFeatures",
        46,
    )


def test_exit_codes_are_distinct_and_documented():
    codes = list(DRIFT_EXIT_CODES.values())
    assert len(set(codes)) == len(codes)
    assert all(40 <= c <= 49 for r, c in DRIFT_EXIT_CODES.items() if r != "InternalError")
    retryable = sorted(RETRYABLE)
    assert retryable == ["CurrentUnreachable", "ReferenceUnreachable", "ReportUnwritable"]
    assert set(retryable) <= set(DRIFT_EXIT_CODES)


def test_settings_defaults(setup):
    env, _, _ = setup
    settings = settings_from_env({k: v for k, v in env.items() if k != "FLYWHEEL_NOW"})
    assert (settings.drift_threshold, settings.min_rows, settings.max_rows, settings.seed) == (
        0.5,
        100,
        200_000,
        0,
    )
    assert settings.window == timedelta(hours=1) and settings.features is None
    assert abs(settings.now - datetime.now(UTC)) < timedelta(minutes=1)
    assert settings.tracking_uri is None  # MLflow needs both the URI and the experiment
    with pytest.raises(DriftError):
        settings_from_env(env | {"FLYWHEEL_MIN_ROWS": "0"})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_unreachable_does_not_fail_the_check(setup, monkeypatch):
    env, logs, reports = setup
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    write_logs(logs, current_like_reference(200), NOW - timedelta(minutes=5))
    env |= {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}",
        "MLFLOW_EXPERIMENT_NAME": "flywheel/ns/iris/drift",
    }

    message, code = run_drift_check(env)

    assert code == 0 and message["result"] == "NoDrift"
    assert message["mlflowRunId"] is None
    assert message["mlflowError"].startswith(f"cannot start a run at {env['MLFLOW_TRACKING_URI']}")
    assert (reports / "result.json").exists()


def test_the_termination_message_fits_with_many_features():
    features = [
        {"name": f"feature_with_a_long_name_{i:04d}", "score": 0.123456789, "drifted": i % 50 == 0}
        for i in range(400)
    ]
    message = {
        "ok": True,
        "result": "Drift",
        "share": 0.02,
        "threshold": 0.01,
        "features": sorted(features, key=lambda f: not f["drifted"]),
        "rows": {"reference": 1, "current": 2},
        "sampled": {"reference": None, "current": None, "seed": 0},
        "reportUri": "s3://bucket/" + "x" * 200 + "/report.html",
        "resultUri": "s3://bucket/" + "x" * 200 + "/result.json",
        "mlflowRunId": "0" * 32,
        "window": {"start": "a", "end": "b"},
    }
    text = render(message, [])
    assert len(text.encode()) < LIMIT_BYTES
    shortened = json.loads(text)
    assert shortened["result"] == "Drift" and shortened["featuresOmitted"] > 0
    assert all(f["drifted"] for f in shortened["features"][:8])


def test_the_command_writes_the_termination_log(setup, tmp_path):
    env, logs, _ = setup
    write_logs(logs, current_like_reference(20), NOW - timedelta(minutes=5))
    log = tmp_path / "termination-log"
    result = CliRunner().invoke(
        drift_check_command, [], env=env | {"FLYWHEEL_TERMINATION_LOG": str(log)}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(log.read_text())["result"] == "InsufficientData"
    failed = CliRunner().invoke(
        drift_check_command,
        [],
        env=env | {"FLYWHEEL_TERMINATION_LOG": str(log), "FLYWHEEL_REFERENCE_FORMAT": "xls"},
    )
    assert failed.exit_code == 40
    assert json.loads(log.read_text())["error"]["reason"] == "BadConfig"
