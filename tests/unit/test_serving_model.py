"""Loading and fetching the served model, and the settings' error messages:
local MLflow model directories, no server."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from flywheel.serving.model import fetch, load
from flywheel.serving.settings import ServeError, build_settings
from flywheel.serving.signature import from_columns, from_rows

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, np.ndarray]:
    bunch = load_iris(as_frame=True)
    return bunch.data.set_axis(FEATURES, axis=1), bunch.target_names[bunch.target]


def save(model, x: pd.DataFrame, path) -> str:
    mlflow.sklearn.save_model(
        model, str(path), signature=infer_signature(x, model.predict(x)), input_example=x.head(3)
    )
    return str(path)


def test_a_numeric_sklearn_model_gets_a_matrix_and_answers_as_itself(iris, tmp_path):
    x, y = iris
    model = LogisticRegression(max_iter=500).fit(x, y)
    served = load(save(model, x, tmp_path / "iris"))
    assert (served.flavor, served.uses_frame, served.classifier) == ("sklearn", False, True)
    batch = from_columns(served.schema, x.to_dict(orient="list"))
    assert served.predict(batch)["predict"].tolist() == model.predict(x).tolist()
    # Whole rows in signature order go to the model as the request's own matrix.
    rows = from_rows(served.schema, x.to_numpy())
    assert rows.matrix is not None
    assert served.predict(rows)["predict"].tolist() == model.predict(x).tolist()


def test_a_model_that_selects_columns_by_name_gets_a_dataframe(iris, tmp_path):
    x, y = iris
    x = x.assign(colour=np.where(x["petal_width"] > 1, "dark", "light"))
    by_name = ColumnTransformer(
        [("onehot", OneHotEncoder(), ["colour"]), ("keep", "passthrough", FEATURES)]
    )
    model = make_pipeline(by_name, LogisticRegression(max_iter=500)).fit(x, y)
    served = load(save(model, x, tmp_path / "mixed"))
    assert (served.flavor, served.uses_frame) == ("sklearn", True)
    batch = from_columns(served.schema, x.to_dict(orient="list"))
    assert served.predict(batch)["predict"].tolist() == model.predict(x).tolist()


def test_not_a_model_is_unloadable(tmp_path):
    with pytest.raises(ServeError) as caught:
        load(str(tmp_path))
    assert caught.value.reason == "ModelUnloadable"


def test_fetch_retries_with_back_off_then_names_the_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    pauses: list[float] = []
    settings = build_settings(model_uri="models:/iris/1", tracking_uri="http://127.0.0.1:9")
    try:
        with pytest.raises(ServeError) as caught:
            fetch(settings, str(tmp_path), sleep=pauses.append)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert caught.value.reason == "TrackingUnavailable"
    assert caught.value.message.startswith("MLFLOW_TRACKING_URI http://127.0.0.1:9: cannot fetch")
    assert pauses == [2.0, 4.0, 8.0]


def test_a_registry_uri_needs_the_tracking_server(tmp_path):
    with pytest.raises(ServeError, match="MLFLOW_TRACKING_URI is not set"):
        fetch(build_settings(model_uri="models:/iris/1"), str(tmp_path))


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({}, "FLYWHEEL_MODEL_URI is not set"),
        ({"port": "http"}, "FLYWHEEL_PORT='http' is invalid"),
        ({"log_sample_rate": "2"}, "FLYWHEEL_INFERENCE_LOG_SAMPLE_RATE='2' is invalid"),
        ({"track": "blue"}, "FLYWHEEL_TRACK='blue' is invalid"),
        ({"log_uri": "gs://x"}, "FLYWHEEL_INFERENCE_LOG_URI='gs://x' is invalid"),
        ({"workers": "0"}, "FLYWHEEL_WORKERS='0' is invalid"),
    ],
)
def test_settings_errors_name_the_variable(given, words):
    options = {"model_uri": "models:/iris/1", **given} if given else {"model_uri": None}
    with pytest.raises(ServeError) as caught:
        build_settings(**options)
    assert caught.value.reason == "InvalidSpec"
    assert caught.value.message.startswith(words)


def test_settings_defaults():
    settings = build_settings(model_uri="models:/iris/1", port="9000", log_uri="")
    assert (settings.port, settings.workers, settings.track, settings.log_uri) == (
        9000,
        2,
        "stable",
        None,
    )
