"""TrainingRun controller: MLflow run first, then the Job, then gates and a ModelVersion."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from ..api.conditions import FALSE, TRUE, ConditionUpdate
from ..api.dataset import DatasetSpec
from ..api.kinds import TRAINING_RUN
from ..api.stamps import format_stamp, now_stamp, parse_stamp
from ..api.trainingrun import TrainingRunSpec
from ..builders.modelversion import build_model_version
from ..builders.training import build_training_job
from ..integrations import children, kube, tracking
from ..policy.gates import evaluate_gates
from ..policy.jobs import failed_attempt, job_finished, job_has_started, stuck_pod
from ..policy.training import read_training_outcome
from ..settings import Settings
from .handlers import register
from .indexes import lookup
from .reconcile import READY, Assessment, accepted, reconcile
from .refs import Missing, missing_reference

SETTINGS = Settings.from_env()


def assess(
    spec: TrainingRunSpec,
    body: Mapping[str, Any],
    datasets: kopf.Index,
    settings: Settings = SETTINGS,
) -> Assessment:
    meta, status = body["metadata"], dict(body.get("status") or {})
    namespace = meta["namespace"]
    dataset = lookup(datasets, namespace, spec.dataset_ref.name)
    if dataset is None:
        missing = Missing("spec.datasetRef.name", "Dataset", spec.dataset_ref.name)
        return missing_reference(missing, namespace)
    if status.get("phase") in ("Succeeded", "Failed"):
        if _new_dataset_version(spec, status, dataset):
            return _next_round(spec, body, status, dataset, settings)
        return _restate(status)
    if status.get("jobName"):
        return _follow(spec, body, status, settings)
    return _start(spec, body, dataset, settings)


def _start(spec, body, dataset, settings: Settings) -> Assessment:
    """Resolve the data version, create the MLflow run, then the Job."""
    meta = body["metadata"]
    name = spec.dataset_ref.name
    if dataset["phase"] != "Ready" or not dataset.get("version"):
        phase = dataset["phase"] or "new"
        why = f"Dataset {name!r} is {phase}; training waits for a validated version"
        return Assessment("Pending", [accepted(), _not_ready("DatasetNotReady", why)])
    version = dataset["version"]
    if spec.dataset_ref.version != "latest" and not version.startswith(spec.dataset_ref.version):
        why = (
            f"spec.datasetRef.version: Dataset {name!r} is at version {version[:12]}, not "
            f"{spec.dataset_ref.version}; the data of other versions is no longer there. "
            "Use 'latest' or the current version."
        )
        return Assessment("Failed", [accepted(), _not_ready("DatasetVersionUnavailable", why)])
    if not settings.mlflow_tracking_uri:
        why = "the operator has no MLflow tracking URI (set MLFLOW_TRACKING_URI on the operator)"
        return Assessment("Pending", [accepted(), _not_ready("MLflowNotConfigured", why)])
    experiment = (spec.mlflow and spec.mlflow.experiment) or f"{meta['namespace']}/{name}"
    try:
        run_id = tracking.ensure_run(
            settings.mlflow_tracking_uri,
            experiment,
            uid=f"{meta['uid']}/{version}",
            name=meta["name"],
            tags={"flywheel.trainingrun": meta["name"], "flywheel.dataset.version": version},
            created_at=_epoch(meta.get("creationTimestamp")),
        )
    except Exception as err:  # MLflow unreachable or refusing: say so, retry on resync
        why = f"MLflow at {settings.mlflow_tracking_uri} is unavailable: {_short(err)}"
        return Assessment("Pending", [accepted(), _not_ready("MLflowUnavailable", why)])
    dataset_spec = DatasetSpec.model_validate(dataset["spec"])
    job = build_training_job(body, spec, dataset_spec, version, run_id, experiment, settings)
    existing = kube.ensure_job(job)
    # If an earlier reconcile made the Job, the run it trains is the truth.
    run_id = _env(existing, "MLFLOW_RUN_ID") or run_id
    now = now_stamp()
    fields = {
        "datasetVersion": version,
        "mlflowRunId": run_id,
        "jobName": job["metadata"]["name"],
        "startTime": now,
        "rounds": (body.get("status") or {}).get("rounds") or 1,
    }
    running = _not_ready("Training", f"Job {job['metadata']['name']} is training")
    return Assessment("Running", [accepted(), running], fields)


def _new_dataset_version(spec, status, dataset) -> bool:
    return (
        spec.trigger == "onNewDatasetVersion"
        and dataset["phase"] == "Ready"
        and bool(dataset.get("version"))
        and dataset["version"] != status.get("datasetVersion")
    )


# What one training leaves in status; a new round starts without them.
_ROUND_FIELDS = (
    "mlflowRunUrl", "completionTime", "durationSeconds", "attempts",
    "metrics", "gates", "modelVersion", "failure",
)  # fmt: skip
_HISTORY_LIMIT = 10


def _next_round(spec, body, status, dataset, settings: Settings) -> Assessment:
    """The Dataset has a new version: train again on it, and keep the last
    round in status.history so nothing about it is lost."""
    started = _start(spec, body, dataset, settings)
    if "jobName" not in started.fields:
        # MLflow unavailable or the like: the finished round stays as it is
        # (its phase too), the condition says why the next one waits.
        return Assessment(status["phase"], started.conditions)
    ready = next((c for c in status.get("conditions") or [] if c["type"] == READY), {})
    past = {
        "datasetVersion": status.get("datasetVersion"),
        "phase": status.get("phase"),
        "reason": ready.get("reason"),
        "mlflowRunId": status.get("mlflowRunId"),
        "modelVersion": status.get("modelVersion"),
        "completionTime": status.get("completionTime"),
    }
    history = [*(status.get("history") or []), {k: v for k, v in past.items() if v}]
    rounds = (status.get("rounds") or 1) + 1
    fields = {
        **dict.fromkeys(_ROUND_FIELDS),  # None removes the field from status
        **started.fields,
        "history": history[-_HISTORY_LIMIT:],
        "rounds": rounds,
    }
    version = dataset["version"]
    event = (
        "Normal",
        "NewDatasetVersion",
        f"Dataset {spec.dataset_ref.name!r} is at version {version[:12]}: training round "
        f"{rounds} in Job {fields['jobName']}",
    )
    return Assessment(started.phase, started.conditions, fields, [event])


def _follow(spec, body, status, settings: Settings) -> Assessment:
    namespace = body["metadata"]["namespace"]
    job = children.get("batch/v1", "Job", namespace, status["jobName"])
    if job is None:
        failure = {"reason": "JobDeleted", "message": f"Job {status['jobName']} was deleted"}
        return _failed(status, failure)
    # Pods are listed, not watched: each list is a request, so not before the
    # Job controller has made any (a reconcile just after the create).
    pods = kube.job_pods(namespace, status["jobName"]) if job_has_started(job) else []
    fields = {"attempts": len(pods)}
    if not job_finished(job):
        stuck = stuck_pod(pods, placement_field="spec.scheduling")
        if stuck:  # stays Running: the Job resumes by itself once someone fixes it
            return Assessment("Running", [accepted(), _not_ready(*stuck)], fields)
        failed = failed_attempt(pods)
        if failed:  # the data store or MLflow down, say: named while the Job retries
            reason, why = failed
            retrying = _not_ready(reason, f"{why}; Job {status['jobName']} retries it")
            return Assessment("Running", [accepted(), retrying], fields)
        running = _not_ready("Training", f"Job {status['jobName']} is training")
        return Assessment("Running", [accepted(), running], fields)
    outcome = read_training_outcome(job, pods)
    # The Job is done but its record is in MLflow: finishing without it would
    # lose the run's metrics and link for good, so wait for MLflow instead.
    try:
        run = _mlflow_run(settings, status["mlflowRunId"])
        if run is not None and not outcome.succeeded:
            tracking.fail_run(settings.mlflow_tracking_uri, run.run_id)
        if outcome.succeeded:
            metrics = dict(run.metrics) if run else {}
            metrics.update((outcome.result or {}).get("metrics") or {})
            fields["metrics"] = metrics
            return _succeeded(spec, body, status, fields, outcome, run, settings)
    except ApiException:
        raise  # the apiserver's trouble, not MLflow's: reconcile retries it
    except Exception as err:
        why = f"MLflow at {settings.mlflow_tracking_uri} is unavailable: {_short(err)}"
        return Assessment("Running", [accepted(), _not_ready("MLflowUnavailable", why)], fields)
    fields.update(_finished(status, run, settings))
    return _failed({**status, **fields}, outcome.failure)


def _finished(status, run, settings: Settings) -> dict[str, Any]:
    """Timing and the MLflow link: written once, when the run's outcome is final."""
    fields = _timing(status)
    if run is not None:
        fields["mlflowRunUrl"] = tracking.run_url(settings.mlflow_tracking_uri, run)
    return fields


def _succeeded(spec, body, status, fields, outcome, run, settings: Settings) -> Assessment:
    register_ = spec.register_
    fields.update(_finished(status, run, settings))
    status = {**status, **fields}
    if register_ is None:
        done = ConditionUpdate(READY, TRUE, "Trained", "training finished; nothing to register")
        return Assessment("Succeeded", [accepted(), done], fields)
    production = None
    if register_.must_beat_production:
        production = tracking.metrics_of_alias(
            settings.mlflow_tracking_uri, register_.model_name, "production"
        )
    verdict = evaluate_gates(
        register_.gates or [], fields["metrics"], register_.must_beat_production, production
    )
    fields["gates"] = verdict.results
    if not verdict.passed:
        return Assessment(
            "Succeeded", [accepted(), _not_ready("GateFailed", verdict.message)], fields
        )
    result = outcome.result or {}
    # models:/<id> names the exact logged model; runs:/ could name an older
    # copy if a retried pod logged the model twice.
    model_uri = (
        f"models:/{result['modelId']}"
        if result.get("modelId")
        else result.get("modelUri") or f"runs:/{status['mlflowRunId']}/model"
    )
    version = build_model_version(body, spec, status, model_uri)
    kube.ensure_custom(version)
    fields["modelVersion"] = version["metadata"]["name"]
    created = ConditionUpdate(
        READY,
        TRUE,
        "ModelVersionCreated",
        f"{verdict.message}; ModelVersion {fields['modelVersion']}",
    )
    event = ("Normal", "ModelVersionCreated", f"gates passed: created {fields['modelVersion']}")
    return Assessment("Succeeded", [accepted(), created], fields, [event])


def _failed(status, failure: dict[str, Any]) -> Assessment:
    message = failure.get("message") or failure["reason"]
    if failure.get("exitCode") is not None:
        message = f"exit code {failure['exitCode']}: {message}"
    fields = {"failure": failure}
    return Assessment("Failed", [accepted(), _not_ready(failure["reason"], message)], fields)


def _restate(status) -> Assessment:
    """A finished run is history: keep what status says."""
    ready = next((c for c in status.get("conditions") or [] if c["type"] == READY), None)
    kept = (
        [ConditionUpdate(READY, ready["status"], ready["reason"], ready["message"])]
        if ready
        else []
    )
    return Assessment(status["phase"], [accepted(), *kept])


def _mlflow_run(settings: Settings, run_id: str):
    """The run, or None when MLflow says there is none (deleted); an
    unreachable MLflow raises."""
    try:
        return tracking.get_run(settings.mlflow_tracking_uri, run_id)
    except Exception as err:
        if tracking.refused(err):
            return None
        raise


def _timing(status) -> dict[str, Any]:
    now = datetime.now(UTC)
    started = status.get("startTime")
    fields = {"completionTime": format_stamp(now)}
    if started:
        began = parse_stamp(started)
        fields["durationSeconds"] = round((now - began).total_seconds(), 1)
    return fields


def _env(job: Mapping[str, Any], name: str) -> str | None:
    for container in job["spec"]["template"]["spec"]["containers"]:
        for variable in container.get("env") or []:
            if variable["name"] == name:
                return variable.get("value")
    return None


def _not_ready(reason: str, message: str) -> ConditionUpdate:
    return ConditionUpdate(READY, FALSE, reason, message)


def _short(err: Exception) -> str:
    return str(err).splitlines()[0][:300] if str(err) else type(err).__name__


def _epoch(stamp: str | None) -> float | None:
    return parse_stamp(stamp).timestamp() if stamp else None


def reconcile_training_run(
    body: kopf.Body, patch: kopf.Patch, dataset_snapshots: kopf.Index, **_: Any
) -> None:
    reconcile(TRAINING_RUN, body, patch, lambda spec, b: assess(spec, b, dataset_snapshots))


register(TRAINING_RUN, reconcile_training_run)
