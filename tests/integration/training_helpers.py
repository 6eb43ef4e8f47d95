"""What the training tests share: a TrainingRun body, and reading how one ended."""

from __future__ import annotations

from typing import Any

from kube_helpers import wait_for
from kubernetes import client

from flywheel.api.common import GROUP, VERSION

RANDOM_FOREST = "sklearn.ensemble.RandomForestClassifier"


def orphan_run(name: str) -> dict[str, Any]:
    """A TrainingRun whose Dataset does not exist: the operator reports on it
    (Pending, DatasetNotFound) and starts nothing."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": {
            "datasetRef": {"name": "not-there"},
            "trainer": {"estimator": "sklearn.linear_model.LogisticRegression"},
        },
    }


def iris_run(name, model, gates, estimator=RANDOM_FOREST, **spec) -> dict[str, Any]:
    return {
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": {
            "datasetRef": {"name": "iris"},
            "trainer": {
                "estimator": estimator,
                "hyperparameters": {"n_estimators": 20, "max_depth": 3}
                if estimator == RANDOM_FOREST
                else {},
                "metrics": ["accuracy", "f1_macro"],
            },
            "register": {"modelName": model, "gates": gates},
            **spec,
        },
    }


def ready_condition(status) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})


def finished(objects, namespace, name):
    """The TrainingRun's status once it failed, registered, or was gated out."""
    status = objects.get(namespace, "TrainingRun", name).get("status") or {}
    ready = ready_condition(status)
    done = status.get("phase") == "Failed" or ready.get("status") == "True"
    gated = ready.get("reason") == "GateFailed"
    return status if done or gated else None


def wait_finished(objects, namespace, name, timeout=240):
    return wait_for(lambda: finished(objects, namespace, name), timeout=timeout, what=name)


def wait_model_phase(objects, namespace, name, phase, timeout=60):
    def reached():
        status = objects.get(namespace, "ModelVersion", name).get("status") or {}
        return status if status.get("phase") == phase else None

    try:
        return wait_for(reached, timeout=timeout, what=f"ModelVersion {name} {phase}")
    except BaseException:
        print("ModelVersion status:", objects.get(namespace, "ModelVersion", name).get("status"))
        raise


def iris_dataset(uri="s3://flywheel-data/iris/", **spec) -> dict[str, Any]:
    return {
        "kind": "Dataset",
        "metadata": {"name": "iris"},
        "spec": {
            "source": {"uri": uri, "format": "csv"},
            "schema": {"target": "species", "columns": [{"name": "species", "type": "string"}]},
            **spec,
        },
    }


def wait_dataset_ready(objects, namespace, name="iris", timeout=120):
    def ready():
        status = objects.get(namespace, "Dataset", name).get("status") or {}
        return status if status.get("phase") == "Ready" else None

    return wait_for(ready, timeout=timeout, what=f"the Dataset {name} snapshot")


def wait_training_pod_running(kube_api, namespace, timeout=180) -> None:
    """Until a training pod of `namespace` runs (an outage is then timed into training)."""
    core = client.CoreV1Api(kube_api)

    def running():
        pods = core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=training"
        ).items
        return any(p.status.phase == "Running" for p in pods)

    wait_for(running, timeout=timeout, every=0.5, what="the training pod to run")
