"""`flywheel serve` as a real process (the installed entry point, two workers)
serving models registered in the real MLflow server, logging inferences into
the real S3-compatible store.

Each test talks to the server only over HTTP, as a client or Prometheus
would, and checks the logged inferences with boto3 and pyarrow.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import subprocess
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from kube_helpers import wait_for
from mlflow.models import infer_signature
from model_server_process import FLYWHEEL, START_SECONDS, running, serve_env
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

pytestmark = pytest.mark.integration

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

SLOW_MODEL = '''
import time

import mlflow


class Doubler(mlflow.pyfunc.PythonModel):
    """Takes a while to load; refuses negative input (a model error)."""

    def load_context(self, context):
        time.sleep(5)

    def predict(self, context, model_input, params=None):
        if (model_input["x"] < 0).any():
            raise ValueError("negative x")
        return model_input["x"] * 2


mlflow.models.set_model(Doubler())
'''


# --- models in the registry ------------------------------------------------


@dataclass(frozen=True)
class Models:
    iris_uri: str
    iris: pd.DataFrame  # the features
    diabetes_uri: str
    diabetes: pd.DataFrame
    slow_uri: str  # models:/m-<id>, not registered


@pytest.fixture(scope="module")
def models(mlflow_server, tmp_path_factory) -> Models:
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_registry_uri(mlflow_server.tracking_uri)
    suffix = secrets.token_hex(4)
    mlflow.set_experiment(f"serve-{suffix}")
    iris = load_iris(as_frame=True)
    x_iris = iris.data.set_axis(FEATURES, axis=1)
    y_iris = iris.target_names[iris.target]
    classifier = LogisticRegression(max_iter=1000).fit(x_iris, y_iris)
    diabetes = load_diabetes(as_frame=True)
    regressor = LinearRegression().fit(diabetes.data, diabetes.target)
    code = tmp_path_factory.mktemp("slow") / "doubler.py"
    code.write_text(SLOW_MODEL)
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            classifier,
            name="iris",
            signature=infer_signature(x_iris, classifier.predict(x_iris)),
            input_example=x_iris.head(3),
            registered_model_name=f"iris-{suffix}",
        )
        mlflow.sklearn.log_model(
            regressor,
            name="diabetes",
            signature=infer_signature(diabetes.data, regressor.predict(diabetes.data)),
            input_example=diabetes.data.head(3),
            registered_model_name=f"diabetes-{suffix}",
        )
        frame = pd.DataFrame({"x": [1.0, 2.0]})
        slow = mlflow.pyfunc.log_model(
            name="doubler",
            python_model=str(code),
            signature=infer_signature(frame, frame["x"] * 2),
        )
    yield Models(
        f"models:/iris-{suffix}/1", x_iris, f"models:/diabetes-{suffix}/1", diabetes.data,
        f"models:/{slow.model_id}",
    )  # fmt: skip
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def iris_server(models, mlflow_server, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("iris-server")
    with running(serve_env(tmp_path, mlflow_server, models.iris_uri), tmp_path) as server:
        yield server


def v2_columns(frame: pd.DataFrame) -> dict:
    return {
        "inputs": [
            {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()}
            for c in frame.columns
        ]
    }


def sample(name, labels: dict, metrics: dict) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


# --- tests -----------------------------------------------------------------


def test_both_protocols_predict_what_the_model_predicts(iris_server, models):
    expected = mlflow.sklearn.load_model(models.iris_uri).predict(models.iris).tolist()
    rows = models.iris.to_numpy().tolist()
    records = models.iris.to_dict(orient="records")
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": FEATURES, "data": rows}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": rows},
        "inputs": {"inputs": models.iris.to_dict(orient="list")},
    }
    for name, body in bodies.items():
        status, answer = iris_server.call("POST", "/invocations", body)
        assert (status, answer) == (200, {"predictions": expected}), name

    status, answer = iris_server.call("POST", "/v2/models/iris/infer", v2_columns(models.iris))
    assert status == 200, answer
    assert answer["model_name"] == "iris" and answer["model_version"] == "iris-v1"
    (output,) = answer["outputs"]
    assert (output["datatype"], output["shape"], output["data"]) == ("BYTES", [150], expected)

    flat = [x for row in rows[:5] for x in row]
    whole_rows = {"id": "r1", "inputs": [{"name": "input-0", "shape": [5, 4], "datatype": "FP32",
                                          "data": flat}]}  # fmt: skip
    status, answer = iris_server.call("POST", "/v2/models/iris/infer", whole_rows)
    assert status == 200 and answer["id"] == "r1"
    assert answer["outputs"][0]["data"] == expected[:5]


def test_metadata_and_health(iris_server):
    assert iris_server.call("GET", "/v2/health/live") == (200, {"live": True})
    assert iris_server.call("GET", "/v2/health/ready") == (200, {"ready": True})
    assert iris_server.status("/ping") == 200
    assert iris_server.call("GET", "/v2/models/iris/ready")[0] == 200
    status, server_meta = iris_server.call("GET", "/v2")
    assert status == 200 and server_meta["name"] == "flywheel"
    status, meta = iris_server.call("GET", "/v2/models/iris")
    assert status == 200
    assert meta["versions"] == ["iris-v1"] and meta["platform"] == "mlflow_sklearn"
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [(f, "FP64") for f in FEATURES]
    status, answer = iris_server.call("GET", "/v2/models/flowers")
    assert status == 404 and "'iris'" in answer["error"]


def test_bad_input_is_refused_naming_the_field_and_the_server_keeps_serving(iris_server, models):
    good = models.iris.head(2).to_dict(orient="records")
    missing = [{k: v for k, v in r.items() if k != "petal_width"} for r in good]
    wrong_type = [{**r, "sepal_length": "long"} for r in good]
    cases = [
        ("/invocations", {"dataframe_records": missing}, 422, "petal_width"),
        ("/invocations", {"dataframe_records": wrong_type}, 422, "sepal_length"),
        ("/invocations", {"instances": [[5.1, 3.5, 1.4]]}, 422, "petal_width"),
        ("/invocations", {"dataframe_split": {"columns": ["a"], "data": [[1]]}}, 422, "a"),
        ("/invocations", {"rows": []}, 400, None),
    ]
    wrong_shape = v2_columns(models.iris.head(2))
    wrong_shape["inputs"][1]["shape"] = [3]
    bytes_for_double = v2_columns(models.iris.head(1))
    bytes_for_double["inputs"][2].update(datatype="BYTES", data=["x"])
    cases += [
        ("/v2/models/iris/infer", wrong_shape, 422, "sepal_width"),
        ("/v2/models/iris/infer", bytes_for_double, 422, "petal_length"),
        ("/v2/models/roses/infer", v2_columns(models.iris.head(1)), 404, "model_name"),
    ]
    for path, body, code, field in cases:
        status, answer = iris_server.call("POST", path, body)
        message = answer.get("message") or answer.get("error")
        assert status == code, (body, answer)
        assert answer.get("field") == field, answer
        if field and field != "model_name":
            assert f"'{field}'" in message, answer
    status, answer = iris_server.call("POST", "/invocations", {"dataframe_records": good})
    assert status == 200 and len(answer["predictions"]) == 2
    assert iris_server.process.poll() is None


def test_metrics_count_requests_codes_rows_and_classes(iris_server, models):
    labels = {"model_version": "iris-v1", "track": "canary"}
    before = iris_server.metrics()
    rows = models.iris.iloc[[0, 1, 2, 50, 51, 100]]  # 3 setosa, 2 versicolor, 1 virginica
    predicted = mlflow.sklearn.load_model(models.iris_uri).predict(rows)
    for _ in range(4):
        iris_server.call("POST", "/invocations", {"dataframe_records": rows.to_dict("records")})
    for _ in range(3):
        iris_server.call("POST", "/v2/models/iris/infer", v2_columns(rows))
    for _ in range(2):
        iris_server.call("POST", "/invocations", {"instances": [[1.0]]})
    after = iris_server.metrics()

    def delta(name, **more):
        return sample(name, {**labels, **more}, after) - sample(name, {**labels, **more}, before)

    requests = "flywheel_serve_requests_total"
    assert delta(requests, protocol="invocations", code="200") == 4
    assert delta(requests, protocol="v2", code="200") == 3
    assert delta(requests, protocol="invocations", code="422") == 2
    assert delta("flywheel_serve_request_duration_seconds_count") == 9
    assert delta("flywheel_serve_request_duration_seconds_bucket", le="10.0") == 9
    assert delta("flywheel_serve_batch_size_count") == 7
    assert delta("flywheel_serve_batch_size_sum") == 7 * len(rows)
    for label, count in zip(*np.unique(predicted, return_counts=True), strict=True):
        assert delta("flywheel_serve_predictions_total", **{"class": label}) == 7 * count
    info = {**labels, "model_uri": models.iris_uri}
    assert sample("flywheel_serve_model_info", info, after) == 1
    assert sample("flywheel_serve_in_flight", labels, after) == 0


def test_regressor_values_and_the_inference_log_in_s3(
    models, mlflow_server, object_store, tmp_path
):
    bucket = object_store.make_bucket(f"t-{secrets.token_hex(6)}")
    env = serve_env(
        tmp_path, mlflow_server, models.diabetes_uri,
        FLYWHEEL_MODEL_NAME="diabetes", FLYWHEEL_MODEL_VERSION="diabetes-v1",
        FLYWHEEL_INFERENCE_LOG_URI=f"s3://{bucket}/inferences/diabetes",
        FLYWHEEL_INFERENCE_LOG_FLUSH_SECONDS="1",
        FLYWHEEL_S3_ENDPOINT=object_store.endpoint_url,
        AWS_ACCESS_KEY_ID=object_store.access_key,
        AWS_SECRET_ACCESS_KEY=object_store.secret_key,
        AWS_DEFAULT_REGION=object_store.region,
    )  # fmt: skip
    frame = models.diabetes.head(10)
    expected = mlflow.sklearn.load_model(models.diabetes_uri).predict(frame)
    s3 = object_store.client()
    with running(env, tmp_path) as server:
        for _ in range(3):
            status, answer = server.call("POST", "/v2/models/diabetes/infer", v2_columns(frame))
            assert status == 200, answer
        assert answer["outputs"][0]["datatype"] == "FP64"
        assert answer["outputs"][0]["data"] == pytest.approx(expected.tolist())

        def logged():
            listing = s3.list_objects_v2(Bucket=bucket, Prefix="inferences/diabetes/")
            keys = [item["Key"] for item in listing.get("Contents", [])]
            bodies = [s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys]
            tables = [pq.read_table(io.BytesIO(body)) for body in bodies]
            return (keys, tables) if sum(t.num_rows for t in tables) >= 30 else None

        keys, tables = wait_for(logged, timeout=30, what="30 logged rows in the bucket")
        labels = {"model_version": "diabetes-v1", "track": "canary"}
        metrics = server.metrics()

    key_pattern = r"inferences/diabetes/hour=\d{4}-\d\d-\d\dT\d\d/.+-\d+-\d{6}\.parquet"
    assert all(re.fullmatch(key_pattern, key) for key in keys), keys
    assert sum(t.num_rows for t in tables) == 30
    table = tables[0]
    assert table.column_names == [*frame.columns, "_flywheel_time", "_flywheel_prediction",
                                  "_flywheel_model_version"]  # fmt: skip
    assert str(table.schema.field("_flywheel_prediction").type) == "double"
    assert str(table.schema.field("_flywheel_time").type) == "timestamp[ms, tz=UTC]"
    assert set(table.column("_flywheel_model_version").to_pylist()) == {"diabetes-v1"}
    logged_predictions = sorted(
        x for t in tables for x in t.column("_flywheel_prediction").to_pylist()
    )
    assert logged_predictions == pytest.approx(sorted(expected.tolist() * 3))

    assert sample("flywheel_serve_prediction_value_count", labels, metrics) == 30
    assert sample("flywheel_serve_prediction_value_sum", labels, metrics) == pytest.approx(
        3 * expected.sum()
    )
    rows = {**labels, "outcome": "written"}
    assert sample("flywheel_serve_inference_log_rows_total", rows, metrics) == 30
    assert sample("flywheel_serve_inference_log_writer_cpu_seconds_total", labels, metrics) > 0
    assert not any(name.startswith("flywheel_serve_predictions_total") for name, _ in metrics)


def test_sigterm_writes_every_buffered_row_before_exit(models, mlflow_server, tmp_path):
    log_dir = tmp_path / "inferences"
    env = serve_env(
        tmp_path, mlflow_server, models.iris_uri,
        FLYWHEEL_INFERENCE_LOG_URI=log_dir.as_uri(),
        FLYWHEEL_INFERENCE_LOG_FLUSH_SECONDS="3600",
        FLYWHEEL_INFERENCE_LOG_BATCH_ROWS="100000",
    )  # fmt: skip
    with running(env, tmp_path) as server:
        for start in range(0, 60, 2):  # 30 requests of 2 rows, over both workers
            rows = models.iris.iloc[start : start + 2].to_numpy().tolist()
            body = {"dataframe_split": {"columns": FEATURES, "data": rows}}
            assert server.call("POST", "/invocations", body)[0] == 200
        assert not list(log_dir.rglob("*.parquet"))  # all still buffered
        assert server.stop() == 0, server.output()

    tables = [pq.read_table(path) for path in sorted(log_dir.rglob("*.parquet"))]
    assert sum(t.num_rows for t in tables) == 60, server.output()
    logged = sorted(x for t in tables for x in t.column("sepal_length").to_pylist())
    assert logged == sorted(models.iris["sepal_length"].head(60).tolist())


def test_live_before_ready_while_a_slow_model_loads_and_model_errors_are_500(
    models, mlflow_server, tmp_path
):
    env = serve_env(tmp_path, mlflow_server, models.slow_uri, FLYWHEEL_MODEL_NAME="doubler")
    with running(env, tmp_path, wait=False) as server:
        seen: set[tuple[int | None, int | None]] = set()

        def ready():
            if server.process.poll() is not None:
                pytest.fail(f"exited {server.process.returncode}:\n{server.output()}")
            live, ready = server.status("/v2/health/live"), server.status("/v2/health/ready")
            seen.add((live, ready))
            return ready == 200

        wait_for(ready, timeout=START_SECONDS, every=0.2, what="the slow model to load")
        assert (200, 503) in seen, seen  # alive, not ready: the model was loading

        status, answer = server.call("POST", "/invocations", {"inputs": {"x": [1.5, 2.0]}})
        assert (status, answer) == (200, {"predictions": [3.0, 4.0]})
        status, answer = server.call("POST", "/invocations", {"inputs": {"x": [-1.0]}})
        assert status == 500 and "negative x" in answer["message"]
        assert server.call("POST", "/invocations", {"inputs": {"x": [1.0]}})[0] == 200
        labels = {"model_version": "iris-v1", "track": "canary", "protocol": "invocations"}
        metrics = server.metrics()
        assert sample("flywheel_serve_requests_total", {**labels, "code": "500"}, metrics) == 1
        assert sample("flywheel_serve_requests_total", {**labels, "code": "200"}, metrics) == 2


@pytest.mark.parametrize(
    ("model_uri", "code", "reason", "words"),
    [
        (None, 14, "InvalidSpec", "FLYWHEEL_MODEL_URI is not set"),
        ("models:/no-such-model/1", 30, "ModelNotFound", "FLYWHEEL_MODEL_URI models:/no-such"),
    ],
)
def test_bad_configuration_is_one_line_and_a_termination_message(
    mlflow_server, tmp_path, model_uri, code, reason, words
):
    env = serve_env(tmp_path, mlflow_server, model_uri)
    done = subprocess.run(
        [str(FLYWHEEL), "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == code, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("flywheel serve:")]
    assert len(lines) == 1 and words in lines[0], done.stderr
    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["ok"] is False and message["error"]["reason"] == reason
    assert words in message["error"]["message"]
