"""A random forest and a scaled logistic regression, logged as `flywheel train`
logs them (skops) to a real MLflow server, served by the real `flywheel
serve`: compiled models serve them, the log says so, and every answer is
scikit-learn's own, rows on the forest's thresholds and far outside the
training range included."""

from __future__ import annotations

import secrets

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from model_server_process import running, serve_env
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from flywheel.workloads.train import serialization_format


def log_model(mlflow_server, make) -> tuple[str, object, pd.DataFrame]:
    data = load_breast_cancer(as_frame=True)
    x = data.data.set_axis([f"f{i}" for i in range(data.data.shape[1])], axis=1)
    y = data.target_names[data.target]  # text labels, as a user's often are
    model = make().fit(x, y)
    serialization, trusted = serialization_format(model)
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_experiment(f"compiled-{secrets.token_hex(4)}")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict(x)),
            input_example=x.head(5),
            serialization_format=serialization,
            skops_trusted_types=trusted,
        )
    mlflow.set_tracking_uri(None)
    return info.model_uri, model, x


def on_thresholds(forest: RandomForestClassifier, x: pd.DataFrame) -> pd.DataFrame:
    """Rows whose values sit exactly on the first trees' split thresholds."""
    rows = x.head(60).to_numpy().copy()
    for i, tree in enumerate(forest.estimators_[: len(rows)]):
        node = 0  # the root's split: every row of this tree meets it
        rows[i, tree.tree_.feature[node]] = tree.tree_.threshold[node]
    return pd.DataFrame(rows, columns=x.columns)


def far_out(model: object, x: pd.DataFrame) -> pd.DataFrame:
    """Rows scaled far beyond the training range (scores far from zero, both signs)."""
    sign = np.where(np.arange(60) % 2 == 0, 1e6, -1e6)[:, None]
    return pd.DataFrame(x.head(60).to_numpy() * sign, columns=x.columns)


MODELS = {
    "forest": (
        lambda: RandomForestClassifier(n_estimators=40, random_state=0),
        on_thresholds,
        "compiled trees serve predict: RandomForestClassifier, 40 trees",
    ),
    "logistic": (
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        far_out,
        "compiled linear model serves predict: StandardScaler -> LogisticRegression, 30 features",
    ),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_served_model_is_compiled_and_answers_as_scikit_learn(kind, mlflow_server, tmp_path):
    make, edge_rows, says = MODELS[kind]
    uri, model, x = log_model(mlflow_server, make)
    rows = pd.concat([x, edge_rows(model, x)], ignore_index=True)
    expected = model.predict(rows).tolist()
    env = serve_env(tmp_path, mlflow_server, uri, FLYWHEEL_MODEL_NAME=kind, FLYWHEEL_WORKERS="1")
    with running(env, tmp_path) as server:
        v2 = {
            "inputs": [
                {
                    "name": "rows",
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "data": rows.to_numpy().ravel().tolist(),
                }
            ]
        }
        status, answer = server.call("POST", f"/v2/models/{kind}/infer", v2)
        assert status == 200, answer
        assert answer["outputs"][0]["data"] == expected
        one_by_one = []
        for row in rows.head(20).to_numpy().tolist():
            split = {"dataframe_split": {"columns": list(rows.columns), "data": [row]}}
            status, answer = server.call("POST", "/invocations", split)
            assert status == 200, answer
            one_by_one.extend(answer["predictions"])
        assert one_by_one == expected[:20]
        output = server.output()
    assert says in output
