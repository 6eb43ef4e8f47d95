"""`flywheel train`: the built-in scikit-learn trainer, inside the training Job.

The operator creates the MLflow run before the Job starts and passes the rest
as environment; this command trains into that run:

    FLYWHEEL_TRAINER          the TrainingRun's spec.trainer as JSON
    FLYWHEEL_DATASET_URI      s3://, file:// or https:// (every object under it)
    FLYWHEEL_DATASET_FORMAT   csv or parquet
    FLYWHEEL_DATASET_VERSION  the pinned content hash; other data fails the run
    FLYWHEEL_TARGET_COLUMN    the label column unless spec.trainer.targetColumn is set
    FLYWHEEL_S3_ENDPOINT      S3 endpoint of the data (with AWS_ACCESS_KEY_ID, ...)
    MLFLOW_TRACKING_URI, MLFLOW_RUN_ID, MLFLOW_EXPERIMENT_NAME
    FLYWHEEL_TERMINATION_LOG  where the result JSON goes (/dev/termination-log)

It reads the data (checking its version), fits a Pipeline of one-hot encoding
and the estimator, scores it on the validation split, logs params, metrics
and the model (sklearn flavor, with signature and input example) into the run
and ends it FINISHED, or FAILED with the reason in the tags and the result.
The model is not registered: the operator's ModelVersion does that.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from ..api.trainingrun import BuiltinTrainer
from .errors import EXIT_CODES, WorkloadError, parse_model
from .snapshot import configure_logging, failed
from .storage import open_store
from .termination import DEFAULT_PATH, redact, render_termination, report_and_exit, secret_values

if TYPE_CHECKING:
    from .fitting import Estimator, LoadedData, Prepared, Trained

log = logging.getLogger("flywheel.train")

MODEL_NAME = "model"  # the artifact name: runs:/<run id>/model
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MAX_TAG_LENGTH = 5000
# Param names of our own; a hyperparameter of the same name is logged as
# "hyperparameter.<name>" instead.
OWN_PARAMS = frozenset(
    {
        "estimator",
        "seed",
        "validation_split",
        "target",
        "features",
        "metrics",
        "dataset_uri",
        "dataset_format",
        "dataset_version",
    }
)


@dataclass(frozen=True)
class TrainSettings:
    """The environment contract, as the command received it."""

    trainer: str | None = None
    dataset_uri: str | None = None
    dataset_format: str | None = None
    dataset_version: str | None = None
    target_column: str | None = None
    s3_endpoint: str | None = None
    tracking_uri: str | None = None
    run_id: str | None = None
    experiment: str | None = None
    http_authorization: str | None = None


def run_training(settings: TrainSettings) -> tuple[dict[str, Any], int]:
    """The termination message and exit code; never raises."""
    try:
        if not settings.tracking_uri or not settings.run_id:
            raise WorkloadError(
                "InvalidSpec", "MLFLOW_TRACKING_URI and MLFLOW_RUN_ID must both be set"
            )
        result = train_in_run(settings)
    except WorkloadError as exc:
        log.error("training failed (%s): %s", exc.reason, exc.message)
        return failed(exc.reason, exc.message), EXIT_CODES[exc.reason]
    except Exception as exc:  # the message must say something even for a bug
        log.error("training failed unexpectedly:\n%s", traceback.format_exc())
        return failed("InternalError", f"{type(exc).__name__}: {exc}"), EXIT_CODES["InternalError"]
    return result, 0


def train_in_run(settings: TrainSettings) -> dict[str, Any]:
    """Resume the operator's run, train, end it FINISHED (or FAILED and re-raise)."""
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    with tracking(f"open run {settings.run_id}", settings, opening=True):
        run = mlflow.start_run(run_id=settings.run_id)
    check_experiment(run, settings)
    try:
        result = train_and_log(settings, run.info.run_id)
        with tracking("finish the run", settings):
            mlflow.end_run("FINISHED")
    except BaseException as exc:
        end_failed(exc)
        raise
    return result


def train_and_log(settings: TrainSettings, run_id: str) -> dict[str, Any]:
    # pandas and scikit-learn load here, not when the command line starts.
    import mlflow

    from . import fitting

    trainer = parse_trainer(settings.trainer)
    uri, data_format, pinned = dataset_location(settings)
    target = trainer.target_column or settings.target_column
    log_params(settings, trainer, target, trainer.hyperparameters or {})

    estimator = fitting.make_estimator(trainer)
    log_params(settings, trainer, target, estimator.hyperparameters)  # + random_state
    fitting.check_task_metrics(trainer.metrics, estimator)
    if not target:
        raise WorkloadError(
            "InvalidSpec",
            "no target column: set spec.trainer.targetColumn or the Dataset's spec.schema.target",
        )

    store = open_store(
        uri, endpoint=settings.s3_endpoint, authorization=settings.http_authorization
    )
    loaded = fitting.load_dataset(store, uri, data_format)
    fitting.check_version(pinned, loaded.version, uri)
    log.info("dataset version %s: %d rows", loaded.version, len(loaded.frame))
    set_tags({"flywheel.dataset.version": loaded.version}, settings)

    prepared = fitting.prepare(loaded.frame, trainer, target, estimator.task)
    fitting.check_label_metrics(trainer.metrics, prepared, target)
    with tracking("log params", settings):
        mlflow.log_param("features", clip(json.dumps(prepared.features), MAX_PARAM_LENGTH))

    trained = fitting.train(prepared, estimator, trainer)
    log.info("validation metrics: %s", trained.metrics)
    set_tags({"flywheel.split.stratified": str(trained.stratified).lower()}, settings)
    model_id = log_model(trained, prepared, estimator, settings)
    with tracking("log metrics", settings):
        mlflow.log_metrics(trained.metrics, model_id=model_id)
    result = termination(run_id, model_id, trained, prepared, target, loaded)
    with tracking("log the summary", settings):
        mlflow.log_dict(summary(result, estimator, prepared, trainer), "flywheel/training.json")
    return result


# --- the inputs ------------------------------------------------------------


def parse_trainer(text: str | None) -> BuiltinTrainer:
    return parse_model(text, BuiltinTrainer, "FLYWHEEL_TRAINER", "spec.trainer", "spec.trainer")


def dataset_location(settings: TrainSettings) -> tuple[str, str, str]:
    """URI, format and pinned version; "latest" is the operator's to resolve."""
    uri, data_format, version = (
        settings.dataset_uri,
        settings.dataset_format,
        settings.dataset_version,
    )
    if not uri:
        raise WorkloadError("InvalidSpec", "FLYWHEEL_DATASET_URI is not set")
    if data_format not in ("csv", "parquet"):
        raise WorkloadError(
            "InvalidSpec", f"FLYWHEEL_DATASET_FORMAT must be csv or parquet, not {data_format!r}"
        )
    if not version or len(version) < 12 or any(c not in "0123456789abcdef" for c in version):
        raise WorkloadError(
            "InvalidSpec",
            f"FLYWHEEL_DATASET_VERSION must be a dataset version (12+ hex characters), "
            f"not {version!r}",
        )
    return uri, data_format, version


# --- MLflow ----------------------------------------------------------------


@contextmanager
def tracking(action: str, settings: TrainSettings, opening: bool = False) -> Iterator[None]:
    """MLflow failures as reasons: the server unreachable or refusing
    (TrackingUnavailable: a retry may help), or no such run (InvalidSpec)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        spec_error = opening and exc.error_code in (
            "RESOURCE_DOES_NOT_EXIST",
            "INVALID_PARAMETER_VALUE",
        )
        reason = "InvalidSpec" if spec_error else "TrackingUnavailable"
        message = f"cannot {action} at {settings.tracking_uri}: {exc.message}"
        raise WorkloadError(reason, message) from exc
    except OSError as exc:  # requests' connection errors, artifact uploads
        message = f"cannot {action} at {settings.tracking_uri}: {exc}"
        raise WorkloadError("TrackingUnavailable", message) from exc


def check_experiment(run: Any, settings: TrainSettings) -> None:
    """MLFLOW_EXPERIMENT_NAME names the run's experiment; say so if not."""
    if not settings.experiment:
        return
    import mlflow

    try:
        experiment = mlflow.get_experiment(run.info.experiment_id)
    except Exception:  # informative only: the run id is what counts
        return
    if experiment and experiment.name != settings.experiment:
        log.warning(
            "run %s is in experiment %r, not %r (MLFLOW_EXPERIMENT_NAME); logging into the run",
            run.info.run_id,
            experiment.name,
            settings.experiment,
        )


def log_params(
    settings: TrainSettings,
    trainer: BuiltinTrainer,
    target: str | None,
    hyperparameters: dict[str, Any],
) -> None:
    """Params are write-once in MLflow: logging the same value again (a retried
    pod, or the second call here) is fine, so both calls log the same values."""
    import mlflow

    params: dict[str, str] = {
        "estimator": trainer.estimator,
        "seed": str(trainer.seed),
        "validation_split": str(trainer.validation_split),
        "metrics": ",".join(trainer.metrics),
        "dataset_uri": settings.dataset_uri or "",
        "dataset_format": settings.dataset_format or "",
        "dataset_version": settings.dataset_version or "",
    }
    if target:
        params["target"] = target
    for name, value in hyperparameters.items():
        key = f"hyperparameter.{name}" if name in OWN_PARAMS else name
        params[key] = clip(param_text(value), MAX_PARAM_LENGTH)
    with tracking("log params", settings):
        mlflow.log_params(params)
        mlflow.set_tags(
            {
                "flywheel.trainer": "builtin",
                "flywheel.estimator": trainer.estimator,
                "flywheel.dataset.uri": settings.dataset_uri or "",
            }
        )


def param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def set_tags(tags: dict[str, str], settings: TrainSettings) -> None:
    import mlflow

    with tracking("set tags", settings):
        mlflow.set_tags(tags)


def log_model(
    trained: Trained, prepared: Prepared, estimator: Estimator, settings: TrainSettings
) -> str:
    """Log the fitted Pipeline with the sklearn flavor; return the model id."""
    import mlflow
    from mlflow.models import infer_signature

    # Inputs typed from every row: a column with missing values only outside
    # the validation split must still be optional in the signature.
    signature = infer_signature(prepared.inputs, trained.validation_predictions)
    serialization, trusted = serialization_format(trained.model)
    with tracking("log the model", settings):
        info = mlflow.sklearn.log_model(
            trained.model,
            name=MODEL_NAME,
            signature=signature,
            input_example=prepared.inputs.head(5),
            serialization_format=serialization,
            skops_trusted_types=trusted,
            # Stated, not inferred: inference loads the model in a subprocess
            # (seconds) and lists whatever else this image happens to hold.
            pip_requirements=requirements(type(estimator.model), serialization),
        )
    log.info("logged the model %s (%s)", info.model_id, serialization)
    return info.model_id


def serialization_format(model: Any) -> tuple[str, list[str] | None]:
    """skops (loads without running code) when it can save the model, with the
    model's own non-scikit-learn types marked trusted so it loads again;
    cloudpickle for what skops cannot save."""
    try:
        import skops.io as sio

        return "skops", sio.get_untrusted_types(data=sio.dumps(model))
    except Exception as exc:
        log.warning("saving the model with cloudpickle: skops cannot (%s)", exc)
        return "cloudpickle", None


def requirements(estimator_class: type, serialization: str) -> list[str]:
    """scikit-learn and the serializer pinned, plus the estimator's own package."""
    from importlib import metadata

    from mlflow.sklearn import get_default_pip_requirements

    pinned = get_default_pip_requirements(
        include_cloudpickle=serialization == "cloudpickle",
        include_skops=serialization == "skops",
    )
    top = estimator_class.__module__.split(".")[0]
    if top != "sklearn":  # packages_distributions() reads every installed package: seconds
        for distribution in metadata.packages_distributions().get(top, []):
            pinned.append(f"{distribution}=={metadata.version(distribution)}")
    return pinned


def end_failed(exc: BaseException) -> None:
    """Record why in the run and end it FAILED; MLflow may be what failed."""
    import mlflow

    if mlflow.active_run() is None:
        return
    reason = exc.reason if isinstance(exc, WorkloadError) else "InternalError"
    message = exc.message if isinstance(exc, WorkloadError) else f"{type(exc).__name__}: {exc}"
    message = clip(redact(message, secret_values(os.environ)), MAX_TAG_LENGTH)
    try:
        mlflow.set_tags({"flywheel.error.reason": reason, "flywheel.error.message": message})
    except Exception as tag_error:
        log.warning("cannot record the failure in the run: %s", tag_error)
    try:
        mlflow.end_run("FAILED")
    except Exception as end_error:
        log.warning("cannot end the run as FAILED: %s", end_error)


# --- the result ------------------------------------------------------------


def termination(
    run_id: str,
    model_id: str,
    trained: Trained,
    prepared: Prepared,
    target: str,
    loaded: LoadedData,
) -> dict[str, Any]:
    """What the operator reads from the pod: small, and shrunk to fit if not."""
    rows = {"train": trained.rows_train, "validation": trained.rows_validation}
    if prepared.unlabelled:
        rows["unlabelled"] = prepared.unlabelled
    return {
        "ok": True,
        "runId": run_id,
        "metrics": trained.metrics,
        "modelUri": f"runs:/{run_id}/{MODEL_NAME}",
        "modelId": model_id,
        "rows": rows,
        "features": prepared.features,
        "target": target,
        "task": trained.task,
        "datasetVersion": loaded.version,
    }


def summary(
    result: dict[str, Any], estimator: Estimator, prepared: Prepared, trainer: BuiltinTrainer
) -> dict[str, Any]:
    """The whole result, never shrunk, as a run artifact."""
    return {
        **result,
        "estimator": trainer.estimator,
        "hyperparameters": estimator.hyperparameters,
        "categoricalFeatures": prepared.categorical,
        "seed": trainer.seed,
        "validationSplit": trainer.validation_split,
    }


def clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


# --- the command -----------------------------------------------------------


@click.command("train")
@click.option("--trainer", envvar="FLYWHEEL_TRAINER", help="spec.trainer as JSON.")
@click.option("--dataset-uri", envvar="FLYWHEEL_DATASET_URI", help="s3://, file:// or https://.")
@click.option("--dataset-format", envvar="FLYWHEEL_DATASET_FORMAT", help="csv or parquet.")
@click.option(
    "--dataset-version",
    envvar="FLYWHEEL_DATASET_VERSION",
    help="The version to train on; the data must still hash to it.",
)
@click.option(
    "--target-column",
    envvar="FLYWHEEL_TARGET_COLUMN",
    help="Label column when spec.trainer.targetColumn is unset.",
)
@click.option("--s3-endpoint", envvar="FLYWHEEL_S3_ENDPOINT", help="S3 endpoint of the data.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking server.")
@click.option("--run-id", envvar="MLFLOW_RUN_ID", help="The MLflow run to train into.")
@click.option(
    "--experiment",
    envvar="MLFLOW_EXPERIMENT_NAME",
    help="The run's experiment (checked, not used to find the run).",
)
@click.option(
    "--termination-log",
    envvar="FLYWHEEL_TERMINATION_LOG",
    default=DEFAULT_PATH,
    show_default=True,
    help="Where to write the result JSON (the container's termination message).",
)
def train_command(
    trainer: str | None,
    dataset_uri: str | None,
    dataset_format: str | None,
    dataset_version: str | None,
    target_column: str | None,
    s3_endpoint: str | None,
    tracking_uri: str | None,
    run_id: str | None,
    experiment: str | None,
    termination_log: str,
) -> None:
    """Train the built-in scikit-learn trainer into an MLflow run (runs in the training Job).

    The data is loaded whole into memory, as scikit-learn needs it. Credentials
    come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (s3://) or
    HTTP_AUTHORIZATION (https://). Exits 0 when the model is logged; otherwise
    with the code of the error reason."""
    # The tracking server's address is all it needs; no usage data from the pod.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    secrets = secret_values(os.environ)
    configure_logging(secrets, ("flywheel.train", "flywheel.snapshot"))
    settings = TrainSettings(
        trainer=trainer,
        dataset_uri=dataset_uri,
        dataset_format=dataset_format,
        dataset_version=dataset_version,
        target_column=target_column or None,
        s3_endpoint=s3_endpoint or None,
        tracking_uri=tracking_uri,
        run_id=run_id,
        experiment=experiment,
        http_authorization=os.environ.get("HTTP_AUTHORIZATION") or None,
    )
    message, code = run_training(settings)
    text = render_termination(message, secrets)
    report_and_exit(text, termination_log, log, code)
