"""The ModelVersion a successful TrainingRun creates, with its lineage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api.common import API_VERSION
from ..api.trainingrun import TrainingRunSpec
from .common import child_name, metadata

COMPONENT = "model-version"


def model_version_name(run_name: str, dataset_version: str) -> str:
    return child_name(run_name, dataset_version[:8])


def build_model_version(
    run: Mapping[str, Any], spec: TrainingRunSpec, status: Mapping[str, Any], model_uri: str
) -> dict[str, Any]:
    run_name = run["metadata"]["name"]
    version = status["datasetVersion"]
    register = spec.register_
    parameters = {}
    if spec.trainer:
        parameters = {k: str(v) for k, v in (spec.trainer.hyperparameters or {}).items()}
        parameters["estimator"] = spec.trainer.estimator
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": metadata(run, model_version_name(run_name, version), COMPONENT),
        "spec": {
            "modelName": register.model_name,
            "source": {
                "trainingRun": run_name,
                "mlflowRunId": status["mlflowRunId"],
                "artifactUri": model_uri,
            },
            "approval": register.approval,
            "lineage": {
                "dataset": spec.dataset_ref.name,
                "datasetVersion": version,
                "trainingRun": run_name,
                "mlflowRunId": status["mlflowRunId"],
                "image": spec.container.image if spec.container else "flywheel (built-in trainer)",
                "parameters": parameters,
            },
        },
    }
