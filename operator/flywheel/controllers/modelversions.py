"""ModelVersion controller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from ..api.conditions import FALSE, ConditionUpdate
from ..api.kinds import MODEL_VERSION
from ..api.modelversion import ModelVersionSpec
from .handlers import register
from .indexes import phase_of
from .reconcile import READY, Assessment, accepted, reconcile
from .refs import Missing, missing_reference


def assess(spec: ModelVersionSpec, body: Mapping[str, Any], runs: kopf.Index) -> Assessment:
    namespace = body["metadata"]["namespace"]
    run = spec.source.training_run
    if run and phase_of(runs, namespace, run) is None:
        return missing_reference(Missing("spec.source.trainingRun", "TrainingRun", run), namespace)
    return Assessment(
        phase="Pending",
        conditions=[
            accepted(),
            ConditionUpdate(READY, FALSE, "NotRegistered", "not yet in the model registry"),
        ],
    )


def reconcile_model_version(
    body: kopf.Body, patch: kopf.Patch, training_run_phases: kopf.Index, **_: Any
) -> None:
    reconcile(MODEL_VERSION, body, patch, lambda spec, b: assess(spec, b, training_run_phases))


register(MODEL_VERSION, reconcile_model_version)
