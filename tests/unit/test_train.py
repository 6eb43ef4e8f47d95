"""`flywheel train`: the built-in trainer, against file:// data and a local
MLflow store (SQLite, artifacts in a temporary folder).

Each test creates its run first, as the operator does, and runs the command
with the operator's environment; the real tracking server and S3 store are in
tests/integration/test_train_mlflow.py.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn import metrics as skm
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split

from flywheel.api.dataset import DatasetSpec
from flywheel.workloads.errors import EXIT_CODES
from flywheel.workloads.snapshot import take_snapshot
from flywheel.workloads.termination import LIMIT_BYTES, render_termination
from flywheel.workloads.train import train_command

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
FOREST = {
    "estimator": "sklearn.ensemble.RandomForestClassifier",
    "hyperparameters": {"n_estimators": 15},
}
CLASSIFIER_METRICS = [
    "accuracy",
    "balanced_accuracy",
    "f1",
    "f1_macro",
    "precision",
    "recall",
    "roc_auc",
    "log_loss",
]


@pytest.fixture(scope="session")
def iris() -> pd.DataFrame:
    bunch = load_iris(as_frame=True)
    frame = bunch.data.set_axis(IRIS_FEATURES, axis=1)
    frame["species"] = bunch.target_names[bunch.target]
    return frame


@pytest.fixture(scope="session")
def diabetes() -> pd.DataFrame:
    return load_diabetes(as_frame=True).frame  # ten features and "target"


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> str:
    """A SQLite tracking store, artifacts in a folder; the global URI restored after."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    client.create_experiment("unit/iris", artifact_location=(root / "artifacts").as_uri())
    yield uri
    mlflow.set_tracking_uri(None)


def write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def snapshot_version(path: Path, fmt: str = "csv") -> str:
    """The version the Dataset's snapshot reports for the same data."""
    spec = DatasetSpec.model_validate({"source": {"uri": path.as_uri(), "format": fmt}})
    return take_snapshot(spec, (path.parent / "profile.json").as_uri()).version


def new_run(tracking: str) -> str:
    """What the operator does before the Job starts."""
    client = mlflow.MlflowClient(tracking)
    experiment = client.get_experiment_by_name("unit/iris").experiment_id
    return client.create_run(experiment, tags={"flywheel.uid": "test"}).info.run_id


def train(tracking, tmp_path, data: Path, trainer: dict, *, fmt="csv", target=None, **env):
    """Run the command with the operator's environment; (exit code, message, run id)."""
    run_id = env.pop("run_id", None) or new_run(tracking)
    log = tmp_path / f"termination-{run_id}"
    environment = {
        "FLYWHEEL_TRAINER": json.dumps(trainer),
        "FLYWHEEL_DATASET_URI": data.as_uri(),
        "FLYWHEEL_DATASET_FORMAT": fmt,
        "FLYWHEEL_DATASET_VERSION": env.pop("version", None) or snapshot_version(data, fmt),
        "FLYWHEEL_TARGET_COLUMN": target or "",
        "MLFLOW_TRACKING_URI": tracking,
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_NAME": "unit/iris",
        "FLYWHEEL_TERMINATION_LOG": str(log),
        **env,
    }
    outcome = CliRunner().invoke(train_command, [], env=environment)
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), outcome.output
    assert len(log.read_bytes()) < LIMIT_BYTES
    return outcome.exit_code, json.loads(log.read_text()), run_id


def forest(**changes) -> dict:
    """The forest trainer, changed; another estimator comes without its hyperparameters."""
    base = FOREST if "estimator" not in changes else {}
    return {**base, **changes}


def reference_split(frame: pd.DataFrame, target: str, seed=42, stratify=True):
    x, y = frame.drop(columns=[target]), frame[target]
    return train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y if stratify else None
    )


# --- success ---------------------------------------------------------------


def test_iris_classifier_trains_into_the_operators_run(iris, tracking, tmp_path):
    data = write(iris, tmp_path / "iris" / "iris.csv")
    trainer = {**FOREST, "seed": 3, "metrics": CLASSIFIER_METRICS}

    code, message, run_id = train(tracking, tmp_path, data.parent, trainer, target="species")

    assert code == 0, message
    # The same split and forest, fitted and scored here with scikit-learn alone.
    x_train, x_val, y_train, y_val = reference_split(pd.read_csv(data), "species", seed=3)
    forest = RandomForestClassifier(n_estimators=15, random_state=3).fit(x_train, y_train)
    predicted, proba = forest.predict(x_val), forest.predict_proba(x_val)
    expected = {
        "accuracy": skm.accuracy_score(y_val, predicted),
        "balanced_accuracy": skm.balanced_accuracy_score(y_val, predicted),
        "f1": skm.f1_score(y_val, predicted, average="weighted"),
        "f1_macro": skm.f1_score(y_val, predicted, average="macro"),
        "precision": skm.precision_score(y_val, predicted, average="weighted"),
        "recall": skm.recall_score(y_val, predicted, average="weighted"),
        "roc_auc": skm.roc_auc_score(y_val, proba, multi_class="ovr"),
        "log_loss": skm.log_loss(y_val, proba),
    }
    assert message["metrics"] == pytest.approx(expected)
    assert message == {
        "ok": True,
        "runId": run_id,
        "metrics": message["metrics"],
        "modelUri": f"runs:/{run_id}/model",
        "modelId": message["modelId"],
        "rows": {"train": 120, "validation": 30},
        "features": IRIS_FEATURES,
        "target": "species",
        "task": "classification",
        "datasetVersion": snapshot_version(data.parent),
    }

    run = mlflow.MlflowClient(tracking).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == pytest.approx(expected)
    assert run.data.params == {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "n_estimators": "15",
        "random_state": "3",
        "seed": "3",
        "validation_split": "0.2",
        "metrics": ",".join(CLASSIFIER_METRICS),
        "target": "species",
        "features": json.dumps(IRIS_FEATURES),
        "dataset_uri": data.parent.as_uri(),
        "dataset_format": "csv",
        "dataset_version": snapshot_version(data.parent),
    }
    tags = run.data.tags
    assert tags["flywheel.dataset.version"] == message["datasetVersion"]
    assert tags["flywheel.split.stratified"] == "true"
    assert tags["flywheel.uid"] == "test"  # the operator's tags stay
    assert "flywheel.error.reason" not in tags

    model = mlflow.sklearn.load_model(message["modelUri"])
    assert list(model.predict(x_val)) == list(predicted)
    info = mlflow.models.get_model_info(message["modelUri"])
    assert info.signature.inputs.input_names() == IRIS_FEATURES
    assert info.model_id == message["modelId"]
    assert info.flavors["sklearn"]["serialization_format"] == "skops"


def test_diabetes_regression(diabetes, tracking, tmp_path):
    data = write(diabetes, tmp_path / "diabetes.parquet")
    trainer = {
        "estimator": "sklearn.linear_model.Ridge",
        "hyperparameters": {"alpha": 0.5},
        "metrics": ["rmse", "mae", "r2"],
    }

    code, message, run_id = train(tracking, tmp_path, data, trainer, fmt="parquet", target="target")

    assert code == 0, message
    x_train, x_val, y_train, y_val = reference_split(diabetes, "target", stratify=False)
    predicted = Ridge(alpha=0.5).fit(x_train, y_train).predict(x_val)
    assert message["metrics"] == pytest.approx(
        {
            "rmse": skm.root_mean_squared_error(y_val, predicted),
            "mae": skm.mean_absolute_error(y_val, predicted),
            "r2": skm.r2_score(y_val, predicted),
        }
    )
    assert message["task"] == "regression"
    assert message["rows"] == {"train": 353, "validation": 89}
    run = mlflow.MlflowClient(tracking).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["random_state"] == "42"  # the seed, as Ridge takes one
    assert run.data.tags["flywheel.split.stratified"] == "false"


def test_the_seed_makes_training_repeatable(iris, tracking, tmp_path):
    data = write(iris, tmp_path / "iris.csv")
    trainer = {**FOREST, "seed": 7, "validationSplit": 0.3, "metrics": ["accuracy", "log_loss"]}

    first = train(tracking, tmp_path, data, trainer, target="species")[1]
    second = train(tracking, tmp_path, data, trainer, target="species")[1]

    assert first["ok"] and second["ok"]
    assert first["metrics"] == second["metrics"]
    assert first["runId"] != second["runId"]


def test_text_features_are_one_hot_encoded_inside_the_model(iris, tracking, tmp_path):
    frame = iris.copy()
    frame["colour"] = np.where(frame["petal_length"] > 4, "dark", "light")
    frame.loc[::7, "colour"] = None  # missing values are a category of their own
    frame["batch"] = np.arange(len(frame)) % 3 == 0  # booleans too
    frame.loc[::11, "species"] = None  # rows without a label are left out
    data = write(frame, tmp_path / "coloured.csv")
    trainer = {**FOREST, "targetColumn": "species", "metrics": ["accuracy"]}

    code, message, _ = train(tracking, tmp_path, data, trainer)

    assert code == 0, message
    assert message["features"] == [*IRIS_FEATURES, "colour", "batch"]
    assert message["rows"] == {"train": 108, "validation": 28, "unlabelled": 14}
    model = mlflow.sklearn.load_model(message["modelUri"])
    encoder = model.named_steps["encode"].named_transformers_["onehot"]
    assert list(encoder.feature_names_in_) == ["colour", "batch"]
    # The model takes the raw columns, including a colour it never saw.
    raw = frame.drop(columns=["species"]).head(3).assign(colour=["purple", None, "dark"])
    assert set(model.predict(raw)) <= {"setosa", "versicolor", "virginica"}
    inputs = mlflow.models.get_model_info(message["modelUri"]).signature.inputs
    assert {spec.name: spec.type.name for spec in inputs.inputs}["colour"] == "string"


def test_chosen_features_only(iris, tracking, tmp_path):
    data = write(iris, tmp_path / "iris.csv")
    trainer = {**FOREST, "features": ["petal_width", "petal_length"], "metrics": ["accuracy"]}

    code, message, _ = train(tracking, tmp_path, data, trainer, target="species")

    assert code == 0, message
    assert message["features"] == ["petal_width", "petal_length"]
    signature = mlflow.models.get_model_info(message["modelUri"]).signature
    assert signature.inputs.input_names() == ["petal_width", "petal_length"]


def test_every_object_under_the_uri_is_read_in_key_order(iris, tracking, tmp_path):
    root = tmp_path / "parts"
    write(iris.iloc[:70], root / "a.csv")
    (root / "b").mkdir()
    (root / "b" / "rest.csv.gz").write_bytes(
        gzip.compress(iris.iloc[70:].to_csv(index=False).encode())
    )
    (root / "_SUCCESS").write_text("")

    code, message, _ = train(
        tracking, tmp_path, root, forest(metrics=["accuracy"]), target="species"
    )

    assert code == 0, message
    assert message["rows"] == {"train": 120, "validation": 30}
    assert message["datasetVersion"] == snapshot_version(root)


# --- errors ----------------------------------------------------------------


def changed(iris, tmp_path):
    """The version of the data as snapshotted, then one value changed."""
    path = write(iris, tmp_path / "iris.csv")
    version = snapshot_version(path)
    write(iris.assign(sepal_length=iris["sepal_length"] + 0.1), path)
    return path, {}, {"version": version}


def with_holes(iris, tmp_path):
    holes = iris.assign(sepal_width=iris["sepal_width"].where(iris.index % 5 > 0))
    path = write(holes, tmp_path / "holes.csv")
    return path, {"estimator": "sklearn.linear_model.LogisticRegression"}, {}


def case(trainer=None, data=None, **env):
    def make(iris, tmp_path):
        frame = iris if data is None else data(iris)
        return write(frame, tmp_path / "iris.csv"), trainer or {}, env

    return make


ERRORS = {
    "no such class": (case({"estimator": "sklearn.ensemble.NoSuchForest"}), "UnknownEstimator"),
    "no such module": (case({"estimator": "nosuchpackage.Model"}), "UnknownEstimator"),
    "not an estimator": (case({"estimator": "collections.OrderedDict"}), "UnknownEstimator"),
    "a clusterer": (case({"estimator": "sklearn.cluster.KMeans"}), "UnknownEstimator"),
    "unknown hyperparameter": (
        case({"hyperparameters": {"n_estimator": 5}}),
        "InvalidHyperparameters",
    ),
    "bad hyperparameter": (
        case({"hyperparameters": {"n_estimators": "many"}}),
        "InvalidHyperparameters",
    ),
    "incompatible hyperparameters": (
        case(
            {
                "estimator": "sklearn.svm.LinearSVC",
                "hyperparameters": {"penalty": "l1", "loss": "hinge"},
            }
        ),
        "InvalidHyperparameters",
    ),
    "rmse of text labels": (case({"metrics": ["accuracy", "rmse"]}), "MetricNotApplicable"),
    "roc_auc without probabilities": (
        case({"estimator": "sklearn.svm.SVC", "metrics": ["roc_auc"]}),
        "MetricNotApplicable",
    ),
    "accuracy of a regressor": (
        case({"estimator": "sklearn.linear_model.Ridge", "metrics": ["accuracy"]}),
        "MetricNotApplicable",
    ),
    "data changed": (changed, "DatasetChanged"),
    "no such target": (case(target="kind"), "InvalidSpec"),
    "no such feature": (case({"features": ["petal_width", "stem_length"]}), "InvalidSpec"),
    "latest": (case(version="latest"), "InvalidSpec"),
    "trainer not json": (case(FLYWHEEL_TRAINER="{estimator"), "InvalidSpec"),
    "trainer invalid": (case({"validationSplit": 1.5}), "InvalidSpec"),
    "regressor on text": (
        case({"estimator": "sklearn.linear_model.Ridge", "metrics": ["r2"]}),
        "InvalidData",
    ),
    "classifier on numbers": (
        case({"features": ["sepal_width"]}, target="sepal_length"),
        "InvalidData",
    ),
    "missing values": (with_holes, "InvalidData"),
    "one class": (case(data=lambda f: f.assign(species="setosa")), "InvalidData"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_each_failure_has_its_reason_and_fails_the_run(iris, tracking, tmp_path, name):
    make, reason = ERRORS[name]
    data, trainer, env = make(iris, tmp_path)
    trainer = forest(**trainer)
    target = env.pop("target", "species")

    code, message, run_id = train(tracking, tmp_path, data, trainer, target=target, **env)

    assert code == EXIT_CODES[reason] != 0, message
    assert message["ok"] is False
    assert message["error"]["reason"] == reason, message
    run = mlflow.MlflowClient(tracking).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["flywheel.error.reason"] == reason
    assert run.data.tags["flywheel.error.message"] == message["error"]["message"]


def test_messages_name_what_to_fix(iris, tracking, tmp_path):
    data = write(iris, tmp_path / "iris.csv")

    def error(**trainer) -> str:
        code, message, _ = train(tracking, tmp_path, data, forest(**trainer), target="species")
        return message["error"]["message"]

    assert "sklearn.ensemble.NoSuchForest" in error(estimator="sklearn.ensemble.NoSuchForest")
    assert "n_estimator" in error(hyperparameters={"n_estimator": 5})
    assert "rmse" in error(metrics=["rmse"]) and "'setosa'" in error(metrics=["rmse"])
    assert "SVC" in error(estimator="sklearn.svm.SVC", metrics=["roc_auc"])


def test_an_unreachable_tracking_server_is_a_reason_to_retry(iris, tmp_path):
    data = write(iris, tmp_path / "iris.csv")
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    code, message, _ = train(
        "http://127.0.0.1:9", tmp_path, data, FOREST, target="species", run_id="0" * 32, **env
    )

    assert code == EXIT_CODES["TrackingUnavailable"]
    assert message["error"]["reason"] == "TrackingUnavailable"


def test_no_data_under_the_uri(iris, tracking, tmp_path):
    (tmp_path / "empty").mkdir()
    code, message, _ = train(
        tracking, tmp_path, tmp_path / "empty", FOREST, target="species", version="ab" * 32
    )

    assert message["error"]["reason"] == "NoObjects"
    assert code == EXIT_CODES["NoObjects"]


# --- the termination message -----------------------------------------------


def test_a_wide_result_still_fits_with_what_the_operator_needs():
    features = [f"a_rather_long_feature_column_name_number_{i:04d}" for i in range(2000)]
    result = {
        "ok": True,
        "runId": "f" * 32,
        "metrics": {"accuracy": 0.97, "log_loss": 0.08},
        "modelUri": f"runs:/{'f' * 32}/model",
        "modelId": "m-" + "e" * 32,
        "rows": {"train": 10**7, "validation": 2 * 10**6},
        "features": features,
        "target": "label",
        "task": "classification",
        "datasetVersion": "d" * 64,
    }

    text = render_termination(result)

    assert len(text.encode()) < LIMIT_BYTES
    shrunk = json.loads(text)
    assert {
        k: shrunk[k] for k in ("runId", "metrics", "modelUri", "modelId", "datasetVersion")
    } == {k: result[k] for k in ("runId", "metrics", "modelUri", "modelId", "datasetVersion")}
    kept = len(shrunk["features"])
    assert kept > 20 and shrunk["features"] == features[:kept]
    assert shrunk["featuresOmitted"] == 2000 - kept
