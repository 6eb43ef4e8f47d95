"""ModelVersion controller: the MLflow registry entry, its aliases and approval."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from ..api.common import GROUP, VERSION
from ..api.conditions import FALSE, TRUE, ConditionUpdate
from ..api.kinds import MODEL_VERSION
from ..api.modelversion import ModelVersionSpec
from ..integrations import tracking
from ..settings import Settings
from .handlers import register
from .indexes import lookup
from .reconcile import READY, Assessment, accepted, reconcile
from .refs import Missing, missing_reference

SETTINGS = Settings.from_env()
CANDIDATE = "candidate"


def assess(
    spec: ModelVersionSpec, body: Mapping[str, Any], runs: kopf.Index, settings: Settings = SETTINGS
) -> Assessment:
    meta, status = body["metadata"], dict(body.get("status") or {})
    namespace = meta["namespace"]
    run_id, model_uri = spec.source.mlflow_run_id, spec.source.artifact_uri
    if spec.source.training_run:
        run = lookup(runs, namespace, spec.source.training_run)
        if run is None:
            missing = Missing("spec.source.trainingRun", "TrainingRun", spec.source.training_run)
            return missing_reference(missing, namespace)
        # A ModelVersion that names its run does not wait on the TrainingRun:
        # that may be training its next round already (onNewDatasetVersion).
        if not run_id and run.get("phase") == "Succeeded":
            run_id = run.get("mlflowRunId")
        if not run_id:
            why = f"TrainingRun {spec.source.training_run!r} has not succeeded yet"
            return Assessment("Pending", [accepted(), _not_ready("WaitingForTraining", why)])
    model_uri = model_uri or f"runs:/{run_id}/model"
    if not settings.mlflow_tracking_uri:
        why = "the operator has no MLflow tracking URI (set MLFLOW_TRACKING_URI on the operator)"
        return Assessment("Pending", [accepted(), _not_ready("MLflowNotConfigured", why)])
    try:
        fields = _register(spec, meta, status, run_id, model_uri, settings)
    except Exception as err:  # say which dependency and why; retried on resync
        if tracking.refused(err):
            why = f"the MLflow registry refused to register {model_uri}: {_short(err)}"
            return Assessment("Failed", [accepted(), _not_ready("RegistrationRefused", why)])
        why = f"MLflow registry at {settings.mlflow_tracking_uri} is unavailable: {_short(err)}"
        return Assessment(
            status.get("phase") or "Pending", [accepted(), _not_ready("MLflowUnavailable", why)]
        )
    approved = spec.approval == "auto" or bool(spec.approved)
    fields.update({"approved": approved, "servable": approved})
    label = f"{spec.model_name} version {fields['registryVersion']}"
    if approved:
        ready = ConditionUpdate(READY, TRUE, "Servable", f"{label} is registered and approved")
        return Assessment("Servable", [accepted(), ready], fields)
    why = f"{label} is registered; set spec.approved: true to serve it"
    return Assessment("Registered", [accepted(), _not_ready("AwaitingApproval", why)], fields)


def _register(spec, meta, status, run_id, model_uri, settings: Settings) -> dict[str, Any]:
    uri = settings.mlflow_tracking_uri
    version = tracking.ensure_model_version(
        uri,
        spec.model_name,
        model_uri,
        run_id,
        uid=meta["uid"],
        tags={"flywheel.modelversion": f"{meta['namespace']}/{meta['name']}"},
    )
    if not status.get("registryVersion"):
        # A new version is the candidate until an InferenceService promotes it.
        tracking.set_alias(uri, spec.model_name, CANDIDATE, version.version)
    fields = {
        "registryVersion": str(version.version),
        "artifactUri": version.source,
        "aliases": tracking.aliases_of(uri, spec.model_name, version.version),
    }
    if run_id:
        fields["metrics"] = tracking.get_run(uri, run_id).metrics
    return fields


def _not_ready(reason: str, message: str) -> ConditionUpdate:
    return ConditionUpdate(READY, FALSE, reason, message)


def _short(err: Exception) -> str:
    return str(err).splitlines()[0][:300] if str(err) else type(err).__name__


def reconcile_model_version(
    body: kopf.Body, patch: kopf.Patch, training_runs: kopf.Index, **_: Any
) -> None:
    reconcile(MODEL_VERSION, body, patch, lambda spec, b: assess(spec, b, training_runs))


register(MODEL_VERSION, reconcile_model_version)


def _deletes_registry_version(spec: Mapping[str, Any], **_: Any) -> bool:
    return spec.get("deletionPolicy") == "Delete"


# Not optional, so kopf holds a ModelVersion with deletionPolicy Delete by its
# finalizer until the registry version is gone (MLflow may be down a while);
# only those: a Retain one (the default) is deleted at once.
@kopf.on.delete(GROUP, VERSION, MODEL_VERSION.plural, when=_deletes_registry_version)
def delete_registry_version(spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> None:
    """deletionPolicy Delete removes the registry version too; Retain keeps it."""
    version = status.get("registryVersion")
    if spec.get("deletionPolicy") != "Delete" or not version or not SETTINGS.mlflow_tracking_uri:
        return
    try:
        tracking.delete_model_version(SETTINGS.mlflow_tracking_uri, spec["modelName"], version)
    except Exception as err:
        if "RESOURCE_DOES_NOT_EXIST" not in str(err):
            raise kopf.TemporaryError(f"MLflow registry: {_short(err)}", delay=15) from err
