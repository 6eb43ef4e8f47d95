"""TrainingRuns end to end: the Dataset's snapshot, then `flywheel train` in a Job
on the pod-runner node, the run in the real MLflow server, gates, and the
ModelVersion registered in MLflow's registry with its lineage."""

from __future__ import annotations

import pytest
from kube_helpers import wait_for
from training_helpers import finished, iris_run, wait_model_phase

pytestmark = pytest.mark.integration


def test_training_registers_a_gated_model_with_lineage(
    operator, objects, namespace, iris, mlflow_server
):
    model = f"iris-{namespace}"
    objects.create(
        namespace,
        iris_run("iris-rf", model, [{"metric": "accuracy", "op": ">=", "threshold": 0.8}]),
    )
    status = wait_for(lambda: finished(objects, namespace, "iris-rf"), timeout=240, what="training")
    assert status["phase"] == "Succeeded", status
    assert status["datasetVersion"] == iris["version"]
    assert status["metrics"]["accuracy"] >= 0.8 and "f1_macro" in status["metrics"]
    assert status["gates"][0]["passed"] is True
    assert status["mlflowRunUrl"].startswith(mlflow_server.tracking_uri)

    mlflow = mlflow_server.client()
    run = mlflow.get_run(status["mlflowRunId"])
    assert run.info.status == "FINISHED"
    assert run.data.params["estimator"].endswith("RandomForestClassifier")

    name = status["modelVersion"]
    version = wait_model_phase(objects, namespace, name, "Servable")
    registered = mlflow.get_model_version(model, version["registryVersion"])
    assert registered.run_id == status["mlflowRunId"]
    assert "candidate" in version["aliases"] and "candidate" in registered.aliases
    lineage = objects.get(namespace, "ModelVersion", name)["spec"]["lineage"]
    assert lineage["datasetVersion"] == iris["version"] and lineage["trainingRun"] == "iris-rf"


def test_failed_gate_leaves_no_model_version_and_says_why(operator, objects, namespace, iris):
    impossible = [{"metric": "accuracy", "op": ">=", "threshold": 1.5}]
    objects.create(namespace, iris_run("too-strict", f"strict-{namespace}", impossible))
    status = wait_for(lambda: finished(objects, namespace, "too-strict"), timeout=240)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "GateFailed")
    assert "accuracy =" in ready["message"] and "needs >= 1.5" in ready["message"]
    assert "modelVersion" not in status
    versions = objects.api.list_namespaced_custom_object(
        "mlops.flywheel.dev", "v1alpha1", namespace, "modelversions"
    )["items"]
    assert versions == []


def test_unknown_estimator_fails_with_the_reason(operator, objects, namespace, iris):
    objects.create(
        namespace,
        iris_run("typo", "typo", [], estimator="sklearn.ensemble.RandomForrestClassifier"),
    )
    status = wait_for(lambda: finished(objects, namespace, "typo"), timeout=240)
    assert status["phase"] == "Failed"
    assert status["failure"]["reason"] == "UnknownEstimator"
    assert "RandomForrestClassifier" in status["failure"]["message"]
    assert status["attempts"] == 1  # a permanent error is not retried
