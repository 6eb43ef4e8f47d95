"""The rest of a model's life before serving: your own training image, a failing
one, manual approval, "must beat production", what deleting a ModelVersion does
to the registry, and retraining when the Dataset gets a new version.

Every pod here runs for real on the pod-runner node with the env the operator
generated; every figure asserted is read back from the cluster or from MLflow.
"""

from __future__ import annotations

import secrets
import textwrap

import mlflow
import pandas as pd
import pytest
from kube_helpers import wait_for
from kubernetes import client
from mlflow.exceptions import MlflowException
from sample_data import iris_csv
from training_helpers import (
    iris_dataset,
    iris_run,
    ready_condition,
    wait_dataset_ready,
    wait_finished,
    wait_model_phase,
)

pytestmark = pytest.mark.integration
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

# Training code written for MLflow, unaware of Flywheel except for the env it
# documents: the data's URI and the S3 endpoint. mlflow.start_run() picks up
# MLFLOW_RUN_ID and so logs into the run the operator created.
OWN_TRAINING_SCRIPT = textwrap.dedent(
    """
    import io, os
    import boto3, mlflow, pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    bucket, prefix = os.environ["FLYWHEEL_DATASET_URI"][5:].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=os.environ["FLYWHEEL_S3_ENDPOINT"])
    key = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"][0]["Key"]
    frame = pd.read_csv(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    x, y = frame.drop(columns="species"), frame["species"]
    x_train, x_test, y_train, y_test = train_test_split(x, y, random_state=0)
    with mlflow.start_run() as run:
        print("training in run", run.info.run_id, flush=True)
        mlflow.log_param("dataset_version", os.environ["FLYWHEEL_DATASET_VERSION"])
        mlflow.log_param("experiment", os.environ["MLFLOW_EXPERIMENT_NAME"])
        model = LogisticRegression(max_iter=500).fit(x_train, y_train)
        mlflow.log_metric("accuracy", model.score(x_test, y_test))
        mlflow.sklearn.log_model(model, name="model", input_example=x_test.head(3))
    """
)

FAILING_SCRIPT = textwrap.dedent(
    """
    import sys
    print("reading features", flush=True)
    print("KeyError: column 'petal_area' not found", file=sys.stderr, flush=True)
    sys.exit(3)
    """
)


def own_image_run(name, script, **spec):
    return {
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": {
            "datasetRef": {"name": "iris"},
            "container": {"image": "flywheel:dev", "command": ["python", "-c", script]},
            "backoffLimit": 0,
            **spec,
        },
    }


def test_own_image_logs_into_the_operators_run_and_waits_for_approval(
    operator, objects, namespace, iris, mlflow_server
):
    model = f"own-{namespace}"
    register = {
        "modelName": model,
        "approval": "manual",
        "gates": [{"metric": "accuracy", "op": ">=", "threshold": 0.8}],
    }
    objects.create(namespace, own_image_run("own", OWN_TRAINING_SCRIPT, register=register))
    status = wait_finished(objects, namespace, "own")
    assert status["phase"] == "Succeeded", status
    assert status["metrics"]["accuracy"] >= 0.8 and status["gates"][0]["passed"]

    run = mlflow_server.client().get_run(status["mlflowRunId"])
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset_version"] == iris["version"]
    assert run.data.params["experiment"] == f"{namespace}/iris"

    name = status["modelVersion"]
    waiting = wait_model_phase(objects, namespace, name, "Registered")
    ready = ready_condition(waiting)
    assert (ready["status"], ready["reason"]) == ("False", "AwaitingApproval")
    assert "spec.approved: true" in ready["message"] and waiting["servable"] is False
    lineage = objects.get(namespace, "ModelVersion", name)["spec"]["lineage"]
    assert lineage["image"] == "flywheel:dev"

    # A person (or a GitOps commit) approves it.
    objects.patch(namespace, "ModelVersion", name, {"spec": {"approved": True}})
    servable = wait_model_phase(objects, namespace, name, "Servable")
    registered = mlflow_server.client().get_model_version(model, servable["registryVersion"])
    assert registered.run_id == status["mlflowRunId"]
    # The run logged the model as MLflow 3 does (a LoggedModel): the registry
    # version must point at it, so that it loads and predicts.
    assert registered.source.startswith("models:/m-")
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{model}/{servable['registryVersion']}")
        frame = pd.DataFrame([[5.1, 3.5, 1.4, 0.2]], columns=FEATURES)
        assert list(loaded.predict(frame)) == ["setosa"]
    finally:
        mlflow.set_tracking_uri(None)

    # Retain (the default): deleting the resource keeps the registry entry.
    objects.api.delete_namespaced_custom_object(
        "mlops.flywheel.dev", "v1alpha1", namespace, "modelversions", name
    )
    wait_for(lambda: not _exists(objects, namespace, "ModelVersion", name), timeout=30)
    assert mlflow_server.client().get_model_version(model, servable["registryVersion"])


def test_failing_image_reports_exit_code_and_last_log_lines(operator, objects, namespace, iris):
    objects.create(namespace, own_image_run("crash", FAILING_SCRIPT))
    status = wait_finished(objects, namespace, "crash")
    assert status["phase"] == "Failed"
    failure = status["failure"]
    assert (failure["reason"], failure["exitCode"]) == ("Error", 3)
    assert "column 'petal_area' not found" in failure["logTail"]
    assert "reading features" in failure["logTail"]
    ready = ready_condition(status)
    assert ready["reason"] == "Error" and "exit code 3" in ready["message"]


def test_must_beat_production_and_deletion_policy_delete(
    operator, objects, namespace, iris, mlflow_server
):
    model = f"prod-{namespace}"
    registry = mlflow_server.client()
    objects.create(namespace, iris_run("good", model, []))
    good = wait_finished(objects, namespace, "good")
    version = wait_model_phase(objects, namespace, good["modelVersion"], "Servable")
    # What an InferenceService does when it promotes a model.
    registry.set_registered_model_alias(model, "production", version["registryVersion"])

    challenger = iris_run(
        "dummy",
        model,
        [],
        estimator="sklearn.dummy.DummyClassifier",
    )
    challenger["spec"]["register"]["mustBeatProduction"] = "accuracy"
    objects.create(namespace, challenger)
    status = wait_finished(objects, namespace, "dummy")
    ready = ready_condition(status)
    assert (ready["status"], ready["reason"]) == ("False", "GateFailed")
    production_accuracy = good["metrics"]["accuracy"]
    assert f"does not beat production's {production_accuracy:.4g}" in ready["message"]
    assert "modelVersion" not in status

    # deletionPolicy Delete: the registry entry goes with the resource.
    name = good["modelVersion"]
    finalizer = "mlops.flywheel.dev/finalizer"
    assert finalizer not in objects.get(namespace, "ModelVersion", name)["metadata"].get(
        "finalizers", []
    ), "a Retain ModelVersion (the default) is deleted without waiting for the operator"
    objects.patch(namespace, "ModelVersion", name, {"spec": {"deletionPolicy": "Delete"}})
    wait_for(
        lambda: (
            finalizer
            in objects.get(namespace, "ModelVersion", name)["metadata"].get("finalizers", [])
        ),
        timeout=30,
        what="the operator to hold the ModelVersion until its registry version is gone",
    )
    objects.api.delete_namespaced_custom_object(
        "mlops.flywheel.dev", "v1alpha1", namespace, "modelversions", name
    )
    wait_for(lambda: not _exists(objects, namespace, "ModelVersion", name), timeout=30)
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST|not found"):
        registry.get_model_version(model, version["registryVersion"])


def test_new_dataset_version_retrains_and_keeps_the_first_model(
    operator, objects, namespace, object_store, artifact_secret, mlflow_server, kube_api
):
    bucket = object_store.make_bucket(f"retrain-{secrets.token_hex(4)}")
    s3 = object_store.client()
    s3.put_object(Bucket=bucket, Key="iris/iris.csv", Body=iris_csv())
    objects.create(namespace, iris_dataset(f"s3://{bucket}/iris/", refreshInterval="10s"))
    first = wait_dataset_ready(objects, namespace)
    model = f"fresh-{namespace}"
    run = iris_run("fresh", model, [], trigger="onNewDatasetVersion")
    objects.create(namespace, run)
    round_one = wait_finished(objects, namespace, "fresh")
    assert round_one["datasetVersion"] == first["version"] and round_one["rounds"] == 1
    first_model = wait_model_phase(objects, namespace, round_one["modelVersion"], "Servable")

    # New bytes: the next refresh snapshots a new version, and the run trains again.
    s3.put_object(Bucket=bucket, Key="iris/iris.csv", Body=iris_csv() + b"5.0,3.4,1.5,0.2,setosa\n")

    def round_two():
        status = objects.get(namespace, "TrainingRun", "fresh").get("status") or {}
        return status if status.get("rounds") == 2 and status.get("modelVersion") else None

    status = wait_for(round_two, timeout=240, what="the second training round")
    assert status["datasetVersion"] != first["version"]
    assert status["modelVersion"] != round_one["modelVersion"]
    assert status["history"] == [
        {
            "datasetVersion": first["version"],
            "phase": "Succeeded",
            "reason": "ModelVersionCreated",
            "mlflowRunId": round_one["mlflowRunId"],
            "modelVersion": round_one["modelVersion"],
            "completionTime": round_one["completionTime"],
        }
    ]
    second = wait_model_phase(objects, namespace, status["modelVersion"], "Servable")
    assert second["registryVersion"] != first_model["registryVersion"]
    # The first round's model is untouched by the second round.
    kept = objects.get(namespace, "ModelVersion", round_one["modelVersion"])["status"]
    assert kept["phase"] == "Servable"
    events = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
    assert any(
        e.reason == "NewDatasetVersion" and e.involved_object.name == "fresh" for e in events
    )


def _exists(objects, namespace, kind, name) -> bool:
    try:
        objects.get(namespace, kind, name)
    except client.ApiException as err:
        if err.status == 404:
            return False
        raise
    return True
