"""`flywheel train` in its own process against the real services: data in the
S3-compatible store, the run and the model on a real `mlflow server` whose
artifacts land in the same store through the server's proxy.

The test does what the operator does (create the run, set the environment)
and then checks the outcome only through MLflow's and S3's own clients.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from flywheel.workloads.errors import EXIT_CODES
from flywheel.workloads.reading import ObjectDigest, dataset_version

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = {"setosa", "versicolor", "virginica"}
FLYWHEEL = Path(sys.executable).with_name("flywheel")  # the installed entry point


@pytest.fixture
def iris_in_bucket(object_store):
    """iris.csv under s3://<new bucket>/iris/; (uri, version, bucket)."""
    bunch = load_iris(as_frame=True)
    frame = bunch.data.set_axis(FEATURES, axis=1)
    frame["species"] = bunch.target_names[bunch.target]
    body = frame.to_csv(index=False).encode()
    bucket = object_store.make_bucket(f"t-{secrets.token_hex(6)}")
    object_store.client().put_object(Bucket=bucket, Key="iris/iris.csv", Body=body)
    # The version as the snapshot defines it: keys relative to the URI.
    version = dataset_version(
        [ObjectDigest("iris.csv", len(body), hashlib.sha256(body).hexdigest())]
    )
    yield f"s3://{bucket}/iris", version, bucket
    s3 = object_store.client()
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)


@pytest.fixture
def tracking_uri(mlflow_server):
    """mlflow.sklearn.load_model("runs:/...") resolves through the global URI."""
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    yield mlflow_server.tracking_uri
    mlflow.set_tracking_uri(None)


def pod_env(tmp_path, object_store, tracking_uri, run_id, uri, version, trainer, **extra):
    """Exactly the pod's environment: MLflow gets the tracking URI only (artifacts
    go through the server); the S3 keys are the data's."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "FLYWHEEL_TRAINER": json.dumps(trainer),
        "FLYWHEEL_DATASET_URI": uri,
        "FLYWHEEL_DATASET_FORMAT": "csv",
        "FLYWHEEL_DATASET_VERSION": version,
        "FLYWHEEL_TARGET_COLUMN": "species",
        "FLYWHEEL_S3_ENDPOINT": object_store.endpoint_url,
        "AWS_ACCESS_KEY_ID": object_store.access_key,
        "AWS_SECRET_ACCESS_KEY": object_store.secret_key,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_RUN_ID": run_id,
        "FLYWHEEL_TERMINATION_LOG": str(tmp_path / "termination-log"),
        **extra,
    }


def flywheel_train(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run(
        [str(FLYWHEEL), "train"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    written = tmp_path / "termination-log"
    return done, json.loads(written.read_text()) if written.exists() else {}


def test_train_logs_a_loadable_model_into_the_operators_run(
    mlflow_server, object_store, iris_in_bucket, tracking_uri, tmp_path
):
    uri, version, bucket = iris_in_bucket
    client = mlflow_server.client()
    # What the operator does before the Job starts.
    experiment_name = f"flywheel/iris-{secrets.token_hex(4)}"
    experiment_id = client.create_experiment(experiment_name)
    run_id = client.create_run(experiment_id, run_name="iris-forest").info.run_id
    trainer = {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "hyperparameters": {"n_estimators": 25, "max_depth": 4},
        "metrics": ["accuracy", "f1_macro", "roc_auc"],
    }
    env = pod_env(
        tmp_path, object_store, tracking_uri, run_id, uri, version, trainer,
        MLFLOW_EXPERIMENT_NAME=experiment_name,
        FLYWHEEL_OUTPUT_URI=f"s3://{bucket}/outputs/{run_id}",
    )  # fmt: skip

    done, result = flywheel_train(env, tmp_path)

    assert done.returncode == 0, done.stderr[-4000:]
    assert result == json.loads(done.stdout.strip().splitlines()[-1])
    assert object_store.secret_key not in done.stdout + done.stderr
    assert result["ok"] is True and result["runId"] == run_id
    assert result["modelUri"] == f"runs:/{run_id}/model"
    assert result["datasetVersion"] == version
    assert (result["features"], result["target"], result["task"]) == (
        FEATURES,
        "species",
        "classification",
    )
    assert result["rows"] == {"train": 120, "validation": 30}

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) == {"accuracy", "f1_macro", "roc_auc"}
    assert run.data.metrics == pytest.approx(result["metrics"])
    assert run.data.metrics["accuracy"] > 0.8
    params = run.data.params
    assert params["estimator"] == "sklearn.ensemble.RandomForestClassifier"
    assert (params["n_estimators"], params["max_depth"], params["random_state"]) == (
        "25",
        "4",
        "42",
    )
    assert (params["dataset_uri"], params["dataset_version"]) == (uri, version)
    assert json.loads(params["features"]) == FEATURES
    assert run.data.tags["flywheel.dataset.version"] == version
    assert not client.search_model_versions(f"run_id = '{run_id}'")  # the operator registers

    model = mlflow.sklearn.load_model(result["modelUri"])
    frame = pd.DataFrame(load_iris().data, columns=FEATURES)
    assert set(model.predict(frame)) == CLASSES
    info = mlflow.models.get_model_info(result["modelUri"])
    assert info.signature.inputs.input_names() == FEATURES
    assert info.model_id == result["modelId"]

    # The model's files are objects in the bucket behind the tracking server.
    s3 = object_store.client()
    prefix = f"artifacts/{experiment_id}/models/{result['modelId']}/artifacts/"
    keys = {
        item["Key"].removeprefix(prefix)
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=mlflow_server.bucket, Prefix=prefix
        )
        for item in page.get("Contents", [])
    }
    assert {"MLmodel", "model.skops", "requirements.txt", "input_example.json"} <= keys, keys


def test_train_fails_the_run_when_the_data_changed(
    mlflow_server, object_store, iris_in_bucket, tracking_uri, tmp_path
):
    uri, version, bucket = iris_in_bucket
    object_store.client().put_object(Bucket=bucket, Key="iris/more.csv", Body=b"a,species\n1,x\n")
    client = mlflow_server.client()
    experiment_id = client.create_experiment(f"flywheel/changed-{secrets.token_hex(4)}")
    run_id = client.create_run(experiment_id).info.run_id
    trainer = {"estimator": "sklearn.tree.DecisionTreeClassifier"}
    env = pod_env(tmp_path, object_store, tracking_uri, run_id, uri, version, trainer)

    done, result = flywheel_train(env, tmp_path)

    assert done.returncode == EXIT_CODES["DatasetChanged"], done.stderr[-4000:]
    assert result["error"]["reason"] == "DatasetChanged"
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["flywheel.error.reason"] == "DatasetChanged"
