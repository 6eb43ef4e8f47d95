"""TrainingRun controller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from ..api.conditions import FALSE, ConditionUpdate
from ..api.kinds import TRAINING_RUN
from ..api.trainingrun import TrainingRunSpec
from .handlers import register
from .indexes import phase_of
from .reconcile import READY, Assessment, accepted, reconcile
from .refs import Missing, missing_reference


def assess(spec: TrainingRunSpec, body: Mapping[str, Any], datasets: kopf.Index) -> Assessment:
    namespace = body["metadata"]["namespace"]
    dataset = spec.dataset_ref.name
    dataset_phase = phase_of(datasets, namespace, dataset)
    if dataset_phase is None:
        return missing_reference(Missing("spec.datasetRef.name", "Dataset", dataset), namespace)
    if dataset_phase != "Ready":
        waiting = ConditionUpdate(
            READY, FALSE, "DatasetNotReady", f"Dataset {dataset!r} is {dataset_phase or 'new'}"
        )
        return Assessment(phase="Pending", conditions=[accepted(), waiting])
    return Assessment(
        phase="Pending",
        conditions=[accepted(), ConditionUpdate(READY, FALSE, "Pending", "training not started")],
    )


def reconcile_training_run(
    body: kopf.Body, patch: kopf.Patch, dataset_phases: kopf.Index, **_: Any
) -> None:
    reconcile(TRAINING_RUN, body, patch, lambda spec, b: assess(spec, b, dataset_phases))


register(TRAINING_RUN, reconcile_training_run)
