"""In-memory indexes of the objects other objects refer to.

kopf keeps them current from its watch streams, so a reference check costs no
API call: 1,000 TrainingRuns naming one Dataset do not read it 1,000 times."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from ..api.common import GROUP, VERSION


@kopf.index(GROUP, VERSION, "datasets")
def dataset_phases(namespace: str, name: str, status: Mapping[str, Any], **_: Any):
    return {(namespace, name): status.get("phase")}


@kopf.index(GROUP, VERSION, "modelversions")
def model_versions(
    namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any
):
    """What an InferenceService needs of a ModelVersion to serve it."""
    return {
        (namespace, name): {
            "phase": status.get("phase"),
            "servable": bool(status.get("servable")),
            "modelName": spec.get("modelName"),
            "registryVersion": status.get("registryVersion"),
            # Lineage: what a drift check compares with, what a retrain clones.
            "trainingRun": (spec.get("source") or {}).get("trainingRun"),
            "dataset": (spec.get("lineage") or {}).get("dataset"),
            "datasetVersion": (spec.get("lineage") or {}).get("datasetVersion"),
        }
    }


@kopf.index(GROUP, VERSION, "datasets")
def dataset_snapshots(
    namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any
):
    """What a TrainingRun needs of its Dataset: phase, current version, source."""
    return {
        (namespace, name): {
            "phase": status.get("phase"),
            "version": status.get("version"),
            "spec": dict(spec),
        }
    }


def lookup(index: kopf.Index, namespace: str, name: str) -> Any:
    store = index.get((namespace, name))
    return next(iter(store), None) if store is not None else None


@kopf.index(GROUP, VERSION, "trainingruns")
def training_runs(namespace: str, name: str, status: Mapping[str, Any], **_: Any):
    """What a ModelVersion needs of its TrainingRun."""
    return {
        (namespace, name): {
            "phase": status.get("phase"),
            "mlflowRunId": status.get("mlflowRunId"),
            "gates": status.get("gates"),
            "modelVersion": status.get("modelVersion"),
            "reason": next(
                (c.get("reason") for c in status.get("conditions") or [] if c["type"] == "Ready"),
                None,
            ),
        }
    }
