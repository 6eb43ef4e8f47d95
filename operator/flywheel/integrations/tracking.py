"""MLflow tracking and registry, as the operator uses them.

Every call is idempotent, keyed by the Kubernetes object's uid in MLflow tags,
so an operator restarted between "created in MLflow" and "written to status"
finds what it made instead of making it twice. The calls go over MLflow's REST
API (`mlflow_rest.py` says why not MlflowClient)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from .mlflow_rest import MlflowError, rest

UID_TAG = "flywheel.uid"
# Who MLflow's UI shows as the runs' creator.
RUN_USER = "flywheel-operator"


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    source: str
    run_id: str | None
    tags: dict[str, str]
    aliases: list[str]


# Experiment ids by (tracking URI, name): an id never changes, and TrainingRuns
# of one Dataset share an experiment, so each looks it up once per process.
_experiment_ids: dict[tuple[str, str], str] = {}

# A run is looked for before one is made only when an earlier attempt may have
# made it. An object created after this process started was never seen by an
# earlier operator (one replica, replaced by Recreate), and this process
# remembers its own attempts: its first attempt sends the create alone. The
# search by tag was half of a new TrainingRun's MLflow requests, and MLflow's
# find-or-create rate bounded the operator's at 1,000 new runs.
STARTED = time.time()
# Margin for the apiserver's clock (creationTimestamp) running ahead of ours.
CLOCK_SKEW_SECONDS = 60.0
_attempted: set[str] = set()
_attempted_lock = threading.Lock()


def _first_attempt(uid: str, created_at: float | None) -> bool:
    with _attempted_lock:
        seen = uid in _attempted
        _attempted.add(uid)
    return not seen and created_at is not None and created_at > STARTED + CLOCK_SKEW_SECONDS


def forget_attempts(object_uid: str) -> None:
    """The object is gone: its attempts need no remembering."""
    with _attempted_lock:
        for key in [k for k in _attempted if k.split("/", 1)[0] == object_uid]:
            _attempted.discard(key)


def ensure_run(
    tracking_uri: str,
    experiment: str,
    uid: str,
    name: str,
    tags: dict[str, str],
    created_at: float | None = None,
) -> str:
    """The run for this object (found by uid tag), created when there is none.
    `uid` is "<object uid>/<round>"; `created_at` is the object's
    creationTimestamp (epoch seconds), None when unknown (then it searches)."""
    mlflow = rest(tracking_uri)
    run_tags = {**tags, UID_TAG: uid}
    first = _first_attempt(uid, created_at)  # noted before anything can fail
    key = (tracking_uri, experiment)
    experiment_id = _experiment_ids.get(key)
    if experiment_id is None:
        found = experiment_id_by_name(tracking_uri, experiment)
        if found is None and (created := _create_experiment(tracking_uri, experiment)) is not None:
            # An experiment this call created holds no run to find.
            _experiment_ids[key] = created
            return _create_run(tracking_uri, created, name, run_tags)
        found = found or experiment_id_by_name(tracking_uri, experiment)  # another was first
        if found is None:
            raise MlflowError(f"experiment {experiment!r} was created and is gone again")
        experiment_id = _experiment_ids[key] = found
    if first:
        return _create_run(tracking_uri, experiment_id, name, run_tags)
    try:
        existing = mlflow.post(
            "runs/search",
            {
                "experiment_ids": [experiment_id],
                "filter": f"tags.`{UID_TAG}` = '{uid}'",
                "max_results": 1,
            },
        ).get("runs", [])
        if existing:
            return existing[0]["info"]["run_id"]
        return _create_run(tracking_uri, experiment_id, name, run_tags)
    except Exception:
        # The experiment may have been deleted and made again under a new id:
        # the retry looks it up afresh.
        _experiment_ids.pop(key, None)
        raise


def experiment_id_by_name(tracking_uri: str, name: str) -> str | None:
    try:
        found = rest(tracking_uri).get("experiments/get-by-name", experiment_name=name)
    except MlflowError as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return found["experiment"]["experiment_id"]


def _create_experiment(tracking_uri: str, name: str) -> str | None:
    """The new experiment's id, or None when another creator made it first."""
    try:
        return rest(tracking_uri).post("experiments/create", {"name": name})["experiment_id"]
    except MlflowError as err:
        if err.error_code == "RESOURCE_ALREADY_EXISTS":
            return None
        raise


def _create_run(tracking_uri: str, experiment_id: str, name: str, tags: dict[str, str]) -> str:
    created = rest(tracking_uri).post(
        "runs/create",
        {
            "experiment_id": experiment_id,
            "run_name": name,
            "user_id": RUN_USER,
            "start_time": int(time.time() * 1000),
            "tags": _pairs(tags),
        },
    )
    return created["run"]["info"]["run_id"]


def get_run(tracking_uri: str, run_id: str) -> RunInfo:
    run = _run(tracking_uri, run_id)
    data = run.get("data", {})
    return RunInfo(
        run_id=run_id,
        experiment_id=run["info"]["experiment_id"],
        status=run["info"]["status"],
        # MLflow sends NaN and infinities as the strings "NaN", "Infinity".
        metrics={m["key"]: float(m["value"]) for m in data.get("metrics", [])},
        params=_dict(data.get("params")),
        tags=_dict(data.get("tags")),
    )


def _run(tracking_uri: str, run_id: str) -> dict[str, Any]:
    return rest(tracking_uri).get("runs/get", run_id=run_id)["run"]


def run_url(tracking_uri: str, run: RunInfo) -> str | None:
    """Where a person opens the run in MLflow's UI."""
    if not tracking_uri.startswith("http"):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{run.experiment_id}/runs/{run.run_id}"


def fail_run(tracking_uri: str, run_id: str) -> None:
    """Mark a run FAILED when its Job failed before the code could say so."""
    if get_run(tracking_uri, run_id).status in ("RUNNING", "SCHEDULED"):
        rest(tracking_uri).post(
            "runs/update",
            {"run_id": run_id, "status": "FAILED", "end_time": int(time.time() * 1000)},
        )


def ensure_model_version(
    tracking_uri: str, model_name: str, source: str, run_id: str, uid: str, tags: dict[str, str]
) -> ModelVersion:
    """Register the model once per ModelVersion object (found by uid tag)."""
    mlflow = rest(tracking_uri)
    try:
        mlflow.get("registered-models/get", name=model_name)
    except MlflowError as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            mlflow.post("registered-models/create", {"name": model_name})
        except MlflowError as create_err:
            # Two ModelVersions of one new model registering at once: the
            # other one created it between our lookup and our create.
            if create_err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    for version in search_model_versions(
        tracking_uri, f"name = '{model_name}' and run_id = '{run_id}'"
    ):
        if version.tags.get(UID_TAG) == uid:
            return version
    # MLflow 3 logs models as LoggedModels; a models:/<id> source must name it.
    source = logged_model_source(tracking_uri, source)
    model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
    created = mlflow.post(
        "model-versions/create",
        {
            "name": model_name,
            "source": source,
            "run_id": run_id,
            "tags": _pairs({**tags, UID_TAG: uid}),
            **({"model_id": model_id} if model_id else {}),
        },
    )
    return _model_version(created["model_version"])


def search_model_versions(tracking_uri: str, filter_string: str) -> list[ModelVersion]:
    """Every version the filter matches, all pages."""
    found, page_token = [], None
    while True:
        page = rest(tracking_uri).get(
            "model-versions/search", filter=filter_string, page_token=page_token
        )
        found += [_model_version(v) for v in page.get("model_versions", [])]
        page_token = page.get("next_page_token")
        if not page_token:
            return found


def logged_model_source(tracking_uri: str, source: str) -> str:
    """`runs:/<run>/<name>` as MLflow 3 stores it: `models:/<id>` of the model the
    run logged under that name, as `mlflow.register_model` resolves it (a plain
    create_model_version does not, and the run's artifacts hold no model, so
    the version would not load). Other sources, and runs that logged no such
    model (MLflow 2 runs keep it in their artifacts), are kept."""
    if not source.startswith("runs:/"):
        return source
    run_id, _, name = source.removeprefix("runs:/").partition("/")
    outputs = _run(tracking_uri, run_id).get("outputs", {}).get("model_outputs", [])
    # The last step's model, as register_model picks.
    for output in sorted(outputs, key=lambda o: int(o.get("step", 0)), reverse=True):
        model = rest(tracking_uri).get(f"logged-models/{output['model_id']}")["model"]
        if model["info"].get("name") == name.strip("/"):
            return f"models:/{output['model_id']}"
    return source


# Each alias's version as this process last read or set it, and when.
# 1,000 InferenceServices created at once that serve one version each asked
# MLflow where `production` pointed: 1,000 reads of one answer, ~17% of a core
# in MLflow's server during the burst. An answer this recent is taken instead.
# A move by someone else in between goes unseen for that long, as a move
# right after any read does (status.productionAlias is not checked again).
ALIAS_SEEN_SECONDS = 10.0
_aliases_seen: dict[tuple[str, str, str], tuple[str, float]] = {}
_aliases_lock = threading.Lock()


def _saw_alias(key: tuple[str, str, str], version: str) -> None:
    with _aliases_lock:
        _aliases_seen[key] = (str(version), time.monotonic())


def _alias_seen_recently(key: tuple[str, str, str]) -> str | None:
    with _aliases_lock:
        version, when = _aliases_seen.get(key, (None, 0.0))
    return version if time.monotonic() - when < ALIAS_SEEN_SECONDS else None


def set_alias(tracking_uri: str, model_name: str, alias: str, version: str) -> None:
    rest(tracking_uri).post(
        "registered-models/alias", {"name": model_name, "alias": alias, "version": str(version)}
    )
    _saw_alias((tracking_uri, model_name, alias), version)


def move_alias(tracking_uri: str, model_name: str, alias: str, version: str) -> bool:
    """Point `alias` at `version`; False when it already pointed there. Reading
    first spares MLflow a write (and the operator an Event that says "moved"),
    as when many InferenceServices serve one model version."""
    key = (tracking_uri, model_name, alias)
    if _alias_seen_recently(key) == str(version):
        return False
    current = _alias_version(tracking_uri, model_name, alias)
    if current is not None and str(current.get("version")) == str(version):
        _saw_alias(key, version)
        return False
    set_alias(tracking_uri, model_name, alias, version)
    return True


def aliases_of(tracking_uri: str, model_name: str, version: str) -> list[str]:
    found = rest(tracking_uri).get("model-versions/get", name=model_name, version=str(version))
    return sorted(found["model_version"].get("aliases", []))


def metrics_of_alias(tracking_uri: str, model_name: str, alias: str) -> dict[str, float] | None:
    """Metrics of the run behind `model_name@alias`, None when there is no such alias."""
    version = _alias_version(tracking_uri, model_name, alias)
    if version is None:
        return None
    run_id = version.get("run_id")
    return get_run(tracking_uri, run_id).metrics if run_id else None


def _alias_version(tracking_uri: str, model_name: str, alias: str) -> dict[str, Any] | None:
    """The model version `model_name@alias` points at; None when there is no such alias."""
    try:
        found = rest(tracking_uri).get("registered-models/alias", name=model_name, alias=alias)
    except MlflowError as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return found["model_version"]


def delete_model_version(tracking_uri: str, model_name: str, version: str) -> None:
    rest(tracking_uri).delete(
        "model-versions/delete", {"name": model_name, "version": str(version)}
    )


def refused(err: Exception) -> bool:
    """True when MLflow answered and said no (a bad request), rather than being
    unreachable: retrying the same call will not help."""
    code = getattr(err, "error_code", None)
    return bool(code) and code not in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE")


def _model_version(found: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        name=found["name"],
        version=str(found["version"]),
        source=found.get("source", ""),
        run_id=found.get("run_id") or None,
        tags=_dict(found.get("tags")),
        aliases=sorted(found.get("aliases", [])),
    )


def _pairs(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": str(value)} for key, value in values.items()]


def _dict(pairs: list[dict[str, Any]] | None) -> dict[str, str]:
    return {pair["key"]: pair.get("value", "") for pair in pairs or []}
