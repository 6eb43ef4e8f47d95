"""`flywheel drift-check` in its own process against the real services: the
reference iris CSV and the inference log (Parquet, in flywheel serve's
layout) in the S3-compatible store, the run on a real `mlflow server`.

The test sets the environment the operator's CronJob sets, and checks the
outcome through the termination message, S3's and MLflow's own clients."""

from __future__ import annotations

import calendar
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from flywheel.serving.inference_log import HourBuffer, hour_of, parquet_bytes, to_table
from flywheel.serving.signature import Column

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SCHEMA = [Column(name, "double") for name in FEATURES]
FLYWHEEL = Path(sys.executable).with_name("flywheel")  # the installed entry point
NOW = datetime(2026, 3, 1, 14, 20, tzinfo=UTC)


def iris() -> pd.DataFrame:
    bunch = load_iris(as_frame=True)
    frame = bunch.data.set_axis(FEATURES, axis=1)
    frame["species"] = bunch.target_names[bunch.target]
    return frame


@pytest.fixture
def bucket(object_store):
    """A new bucket with iris.csv under datasets/iris/; removed afterwards."""
    name = object_store.make_bucket(f"t-{secrets.token_hex(6)}")
    body = iris().to_csv(index=False).encode()
    object_store.client().put_object(Bucket=name, Key="datasets/iris/iris.csv", Body=body)
    yield name
    s3 = object_store.client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


def log_rows(object_store, bucket: str, service: str, frame: pd.DataFrame, moment: datetime):
    """Rows as flywheel serve logs them: its own table and Parquet writer, its key layout."""
    ms = calendar.timegm(moment.utctimetuple()) * 1000
    columns = {name: frame[name].to_numpy(np.float64) for name in FEATURES}
    predictions = frame["species"].to_numpy(dtype=object)
    buffer = HourBuffer(hour_of(ms), 0.0, [(ms, columns, predictions, None)], len(frame))
    data = parquet_bytes(to_table(buffer, SCHEMA, True, "iris-v1"))
    key = f"inference-logs/ns/{service}/iris-v1/hour={hour_of(ms)}/pod-1-{ms}.parquet"
    object_store.client().put_object(Bucket=bucket, Key=key, Body=data)


def pod_env(tmp_path, object_store, mlflow_server, bucket, service, experiment, **extra):
    """Exactly what the CronJob's pod gets."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "FLYWHEEL_REFERENCE_URI": f"s3://{bucket}/datasets/iris/",
        "FLYWHEEL_REFERENCE_FORMAT": "csv",
        "FLYWHEEL_REFERENCE_VERSION": "0123456789ab" * 4,
        "FLYWHEEL_CURRENT_URI": f"s3://{bucket}/inference-logs/ns/{service}",
        "FLYWHEEL_WINDOW": "1h",
        "FLYWHEEL_NOW": NOW.isoformat(),
        "FLYWHEEL_TARGET_COLUMN": "species",
        "FLYWHEEL_REPORT_URI": f"s3://{bucket}/drift/ns/{service}/20260301T1420",
        "FLYWHEEL_S3_ENDPOINT": object_store.endpoint_url,
        "AWS_ACCESS_KEY_ID": object_store.access_key,
        "AWS_SECRET_ACCESS_KEY": object_store.secret_key,
        "AWS_DEFAULT_REGION": object_store.region,
        "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "FLYWHEEL_TERMINATION_LOG": str(tmp_path / "termination-log"),
        **extra,
    }


def drift_check(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run(
        [str(FLYWHEEL), "drift-check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    written = tmp_path / "termination-log"
    return done, json.loads(written.read_text()) if written.exists() else {}


def stored_keys(object_store, bucket: str, prefix: str) -> set[str]:
    listed = object_store.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {item["Key"].removeprefix(prefix) for item in listed.get("Contents", [])}


def sample(rows: int, seed: int) -> pd.DataFrame:
    return iris().sample(rows, replace=True, random_state=seed).reset_index(drop=True)


@pytest.fixture
def experiment(mlflow_server):
    return f"flywheel/ns/iris-{secrets.token_hex(4)}/drift"


def check_run(mlflow_server, result: dict, experiment: str, verdict: str) -> None:
    client = mlflow_server.client()
    run = client.get_run(result["mlflowRunId"])
    assert client.get_experiment(run.info.experiment_id).name == experiment
    assert run.info.status == "FINISHED"
    assert run.data.tags["flywheel.check"] == "drift"
    assert run.data.tags["flywheel.drift.result"] == verdict
    assert run.data.metrics["share_drifted"] == pytest.approx(result["share"])
    assert run.data.metrics["rows_current"] == result["rows"]["current"]
    assert run.data.params["window"] == "1h"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "drift")}
    assert {"drift/report.html", "drift/result.json"} <= artifacts


def test_reference_like_traffic_is_no_drift(
    object_store, mlflow_server, bucket, experiment, tmp_path
):
    log_rows(object_store, bucket, "iris", sample(150, 1), NOW - timedelta(minutes=40))
    log_rows(object_store, bucket, "iris", sample(150, 2), NOW - timedelta(minutes=10))
    log_rows(object_store, bucket, "iris", sample(150, 3), NOW - timedelta(hours=3))  # old
    env = pod_env(tmp_path, object_store, mlflow_server, bucket, "iris", experiment)

    done, result = drift_check(env, tmp_path)

    assert done.returncode == 0, done.stderr[-4000:]
    assert result == json.loads(done.stdout.strip().splitlines()[-1])
    assert object_store.secret_key not in done.stdout + done.stderr
    assert result["ok"] is True and result["result"] == "NoDrift", result
    assert result["rows"] == {"reference": 150, "current": 300}
    assert not any(f["drifted"] for f in result["features"])
    assert result["reportUri"] == env["FLYWHEEL_REPORT_URI"] + "/report.html"
    assert stored_keys(object_store, bucket, "drift/ns/iris/20260301T1420/") == {
        "report.html",
        "result.json",
    }
    check_run(mlflow_server, result, experiment, "NoDrift")


def test_shifted_petals_are_drift(object_store, mlflow_server, bucket, experiment, tmp_path):
    shifted = sample(300, 4)
    shifted["petal_length"] += 3
    shifted["petal_width"] += 2
    log_rows(object_store, bucket, "shifted", shifted, NOW - timedelta(minutes=15))
    env = pod_env(tmp_path, object_store, mlflow_server, bucket, "shifted", experiment)

    done, result = drift_check(env, tmp_path)

    assert done.returncode == 0, done.stderr[-4000:]
    assert result["result"] == "Drift" and result["share"] == 0.5 and result["threshold"] == 0.5
    drifted = {f["name"]: f for f in result["features"] if f["drifted"]}
    assert set(drifted) == {"petal_length", "petal_width"}
    assert all(f["score"] < 0.05 and f["method"] for f in drifted.values())
    body = object_store.client().get_object(
        Bucket=bucket, Key="drift/ns/shifted/20260301T1420/result.json"
    )["Body"]
    stored = json.loads(body.read())
    assert stored["result"] == "Drift" and stored["mlflowRunId"] == result["mlflowRunId"]
    assert stored["reference"]["version"] == "0123456789ab" * 4
    check_run(mlflow_server, result, experiment, "Drift")


def test_too_few_rows_is_insufficient_data(
    object_store, mlflow_server, bucket, experiment, tmp_path
):
    log_rows(object_store, bucket, "quiet", sample(30, 5), NOW - timedelta(minutes=5))
    env = pod_env(tmp_path, object_store, mlflow_server, bucket, "quiet", experiment)

    done, result = drift_check(env, tmp_path)

    assert done.returncode == 0, done.stderr[-4000:]
    assert result["result"] == "InsufficientData"
    assert result["rows"]["current"] == 30 and result["features"] == []
    assert stored_keys(object_store, bucket, "drift/ns/quiet/20260301T1420/") == {"result.json"}
    run = mlflow_server.client().get_run(result["mlflowRunId"])
    assert run.data.tags["flywheel.drift.result"] == "InsufficientData"


def test_an_unknown_feature_is_an_error_naming_it(
    object_store, mlflow_server, bucket, experiment, tmp_path
):
    log_rows(object_store, bucket, "iris", sample(150, 1), NOW - timedelta(minutes=5))
    env = pod_env(
        tmp_path, object_store, mlflow_server, bucket, "iris", experiment,
        FLYWHEEL_FEATURES='["petal_length", "petal_colour"]',
    )  # fmt: skip

    done, result = drift_check(env, tmp_path)

    assert done.returncode == 47, done.stderr[-4000:]
    assert result["ok"] is False and result["error"]["reason"] == "UnknownFeature"
    message = result["error"]["message"]
    assert "'petal_colour'" in message and ", ".join(FEATURES) in message
    assert not stored_keys(object_store, bucket, "drift/")


def test_wrong_keys_are_bad_credentials(object_store, mlflow_server, bucket, tmp_path):
    env = pod_env(
        tmp_path, object_store, mlflow_server, bucket, "iris", "unused",
        AWS_SECRET_ACCESS_KEY="not-the-secret-key", MLFLOW_TRACKING_URI="",
    )  # fmt: skip

    done, result = drift_check(env, tmp_path)

    assert done.returncode == 42, done.stderr[-4000:]
    assert result["error"]["reason"] == "BadCredentials"
    assert "not-the-secret-key" not in done.stdout + done.stderr
