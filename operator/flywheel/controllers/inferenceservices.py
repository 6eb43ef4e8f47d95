"""InferenceService controller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from ..api.conditions import FALSE, ConditionUpdate
from ..api.inferenceservice import InferenceServiceSpec
from ..api.kinds import INFERENCE_SERVICE
from .handlers import register
from .indexes import phase_of
from .reconcile import READY, Assessment, accepted, reconcile
from .refs import Missing, missing_reference


def assess(spec: InferenceServiceSpec, body: Mapping[str, Any], versions: kopf.Index) -> Assessment:
    namespace = body["metadata"]["namespace"]
    wanted = [("spec.stable.modelVersion", spec.stable.model_version)]
    if spec.canary:
        wanted.append(("spec.canary.modelVersion", spec.canary.model_version))
    for field, name in wanted:
        if phase_of(versions, namespace, name) is None:
            return missing_reference(Missing(field, "ModelVersion", name), namespace)
    return Assessment(
        phase="Pending",
        conditions=[
            accepted(),
            ConditionUpdate(READY, FALSE, "NotDeployed", "model servers not deployed yet"),
        ],
    )


def reconcile_inference_service(
    body: kopf.Body, patch: kopf.Patch, model_version_phases: kopf.Index, **_: Any
) -> None:
    reconcile(INFERENCE_SERVICE, body, patch, lambda spec, b: assess(spec, b, model_version_phases))


register(INFERENCE_SERVICE, reconcile_inference_service)
