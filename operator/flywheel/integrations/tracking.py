"""MLflow tracking and registry, as the operator uses them.

Every call is idempotent, keyed by the Kubernetes object's uid in MLflow tags,
so an operator restarted between "created in MLflow" and "written to status"
finds what it made instead of making it twice."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# Fail fast and let kopf retry, rather than block a worker thread through
# MLflow's default of seven retries with backoff.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

UID_TAG = "flywheel.uid"


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


def client(tracking_uri: str):
    from mlflow import MlflowClient

    # The registry is the tracking server's, never a process-wide default
    # (MLflow keeps one, which other code in the process may have set).
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


# Experiment ids by (tracking URI, name): an id never changes, and TrainingRuns
# of one Dataset share an experiment, so each looks it up once per process.
_experiment_ids: dict[tuple[str, str], str] = {}


def ensure_run(
    tracking_uri: str, experiment: str, uid: str, name: str, tags: dict[str, str]
) -> str:
    """The run for this object (found by uid tag), created when there is none."""
    mlflow = client(tracking_uri)
    run_tags = {**tags, UID_TAG: uid}
    key = (tracking_uri, experiment)
    experiment_id = _experiment_ids.get(key)
    if experiment_id is None:
        found = mlflow.get_experiment_by_name(experiment)
        if found is None and (created := _create_experiment(mlflow, experiment)) is not None:
            # An experiment this call created holds no run to find.
            _experiment_ids[key] = created
            return mlflow.create_run(created, run_name=name, tags=run_tags).info.run_id
        found = found or mlflow.get_experiment_by_name(experiment)  # another creator was first
        experiment_id = _experiment_ids[key] = found.experiment_id
    try:
        existing = mlflow.search_runs(
            [experiment_id], filter_string=f"tags.`{UID_TAG}` = '{uid}'", max_results=1
        )
        if existing:
            return existing[0].info.run_id
        return mlflow.create_run(experiment_id, run_name=name, tags=run_tags).info.run_id
    except Exception:
        # The experiment may have been deleted and made again under a new id:
        # the retry looks it up afresh.
        _experiment_ids.pop(key, None)
        raise


def _create_experiment(mlflow, name: str) -> str | None:
    """The new experiment's id, or None when another creator made it first."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.create_experiment(name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_ALREADY_EXISTS":
            return None
        raise


def get_run(tracking_uri: str, run_id: str) -> RunInfo:
    run = client(tracking_uri).get_run(run_id)
    return RunInfo(
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
    )


def run_url(tracking_uri: str, run: RunInfo) -> str | None:
    """Where a person opens the run in MLflow's UI."""
    if not tracking_uri.startswith("http"):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{run.experiment_id}/runs/{run.run_id}"


def fail_run(tracking_uri: str, run_id: str) -> None:
    """Mark a run FAILED when its Job failed before the code could say so."""
    mlflow = client(tracking_uri)
    if mlflow.get_run(run_id).info.status in ("RUNNING", "SCHEDULED"):
        mlflow.set_terminated(run_id, status="FAILED")


def ensure_model_version(
    tracking_uri: str, model_name: str, source: str, run_id: str, uid: str, tags: dict[str, str]
) -> Any:
    """Register the model once per ModelVersion object (found by uid tag)."""
    mlflow = client(tracking_uri)
    try:
        mlflow.get_registered_model(model_name)
    except Exception as err:
        if not _is(err, "RESOURCE_DOES_NOT_EXIST"):
            raise
        try:
            mlflow.create_registered_model(model_name)
        except Exception as create_err:
            # Two ModelVersions of one new model registering at once: the
            # other one created it between our lookup and our create.
            if not _is(create_err, "RESOURCE_ALREADY_EXISTS"):
                raise
    for version in mlflow.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'"):
        if version.tags.get(UID_TAG) == uid:
            return version
    # MLflow 3 logs models as LoggedModels; a models:/<id> source must name it.
    source = logged_model_source(mlflow, source)
    model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
    return mlflow.create_model_version(
        model_name, source, run_id=run_id, tags={**tags, UID_TAG: uid}, model_id=model_id
    )


def logged_model_source(mlflow: Any, source: str) -> str:
    """`runs:/<run>/<name>` as MLflow 3 stores it: `models:/<id>` of the model the
    run logged under that name, as `mlflow.register_model` resolves it (the
    client's create_model_version does not, and the run's artifacts hold no
    model, so the version would not load). Other sources, and runs that
    logged no such model (MLflow 2 runs keep it in their artifacts), are kept."""
    if not source.startswith("runs:/"):
        return source
    run_id, _, name = source.removeprefix("runs:/").partition("/")
    run = mlflow.get_run(run_id)
    outputs = sorted((run.outputs.model_outputs or []) if run.outputs else [], key=lambda o: o.step)
    for output in reversed(outputs):  # the last step's model, as register_model picks
        if mlflow.get_logged_model(output.model_id).name == name.strip("/"):
            return f"models:/{output.model_id}"
    return source


def set_alias(tracking_uri: str, model_name: str, alias: str, version: str) -> None:
    client(tracking_uri).set_registered_model_alias(model_name, alias, version)


def aliases_of(tracking_uri: str, model_name: str, version: str) -> list[str]:
    return sorted(client(tracking_uri).get_model_version(model_name, version).aliases)


def metrics_of_alias(tracking_uri: str, model_name: str, alias: str) -> dict[str, float] | None:
    """Metrics of the run behind `model_name@alias`, None when there is no such alias."""
    mlflow = client(tracking_uri)
    try:
        version = mlflow.get_model_version_by_alias(model_name, alias)
    except Exception as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err) or "INVALID_PARAMETER_VALUE" in str(err):
            return None
        raise
    return dict(mlflow.get_run(version.run_id).data.metrics) if version.run_id else None


def delete_model_version(tracking_uri: str, model_name: str, version: str) -> None:
    client(tracking_uri).delete_model_version(model_name, version)


def _is(err: Exception, code: str) -> bool:
    """Whether MLflow answered with this error code (a REST answer names it in
    the message, a local store only in error_code)."""
    return getattr(err, "error_code", None) == code or code in str(err)


def refused(err: Exception) -> bool:
    """True when MLflow answered and said no (a bad request), rather than being
    unreachable: retrying the same call will not help."""
    code = getattr(err, "error_code", None)
    return bool(code) and code not in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE")
