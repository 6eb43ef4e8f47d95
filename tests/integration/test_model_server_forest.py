"""A random forest logged as `flywheel train` logs it (skops) to a real MLflow
server, served by the real `flywheel serve`: the compiled trees serve it, the
log says so, and every answer is scikit-learn's own, rows on the forest's
thresholds included."""

from __future__ import annotations

import secrets

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from model_server_process import running, serve_env
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier

from flywheel.workloads.train import serialization_format


def log_forest(mlflow_server) -> tuple[str, RandomForestClassifier, pd.DataFrame]:
    data = load_breast_cancer(as_frame=True)
    x = data.data.set_axis([f"f{i}" for i in range(data.data.shape[1])], axis=1)
    y = data.target_names[data.target]  # text labels, as a user's often are
    forest = RandomForestClassifier(n_estimators=40, random_state=0).fit(x, y)
    serialization, trusted = serialization_format(forest)
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_experiment(f"forest-{secrets.token_hex(4)}")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            forest,
            name="forest",
            signature=infer_signature(x, forest.predict(x)),
            input_example=x.head(5),
            serialization_format=serialization,
            skops_trusted_types=trusted,
        )
    mlflow.set_tracking_uri(None)
    return info.model_uri, forest, x


def on_thresholds(forest: RandomForestClassifier, x: pd.DataFrame) -> pd.DataFrame:
    """Rows whose values sit exactly on the first trees' split thresholds."""
    rows = x.head(60).to_numpy().copy()
    for i, tree in enumerate(forest.estimators_[: len(rows)]):
        node = 0  # the root's split: every row of this tree meets it
        rows[i, tree.tree_.feature[node]] = tree.tree_.threshold[node]
    return pd.DataFrame(rows, columns=x.columns)


def test_a_served_forest_is_compiled_and_answers_as_scikit_learn(mlflow_server, tmp_path):
    uri, forest, x = log_forest(mlflow_server)
    rows = pd.concat([x, on_thresholds(forest, x)], ignore_index=True)
    expected = forest.predict(rows).tolist()
    env = serve_env(
        tmp_path, mlflow_server, uri, FLYWHEEL_MODEL_NAME="forest", FLYWHEEL_WORKERS="1"
    )
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
        status, answer = server.call("POST", "/v2/models/forest/infer", v2)
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
    assert "compiled trees serve predict: RandomForestClassifier, 40 trees" in output
