"""TrainingRun: train a model on a Dataset version, track it in MLflow, register it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    EnvVar,
    Model,
    ResourceRequirements,
    ResourceStatus,
    Scheduling,
    StatusModel,
    cel,
    k8s,
)

# Metrics the built-in trainer computes on the validation split (scikit-learn's).
CLASSIFICATION_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "f1_macro",
    "precision",
    "recall",
    "roc_auc",
    "log_loss",
)
REGRESSION_METRICS = ("rmse", "mae", "r2")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS
Metric = Literal[METRICS]  # type: ignore[valid-type]
ComparisonOp = Literal[">=", ">", "<=", "<", "=="]


class DatasetRef(Model):
    name: str = Field(min_length=1, max_length=253, description="Dataset in the same namespace.")
    version: str = Field(
        default="latest",
        pattern=r"^(latest|[0-9a-f]{12,64})$",
        description="A dataset version (content hash, 12+ hex chars) or 'latest'.",
    )


class BuiltinTrainer(Model):
    """The built-in scikit-learn trainer (`flywheel train`)."""

    estimator: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$",
        max_length=256,
        description="Import path of an estimator class, e.g. sklearn.ensemble.RandomForestClassifier.",
    )
    hyperparameters: dict[str, Any] | None = Field(
        default=None,
        description="Keyword arguments for the estimator, e.g. {n_estimators: 100}.",
        json_schema_extra=k8s(preserve_unknown_fields=True),
    )
    target_column: str | None = Field(
        default=None, description="Label column; defaults to the Dataset schema's target."
    )
    features: list[str] | None = Field(
        default=None, description="Feature columns; defaults to every column but the target."
    )
    validation_split: float = Field(
        default=0.2, gt=0, lt=1, description="Share of rows held out for metrics."
    )
    seed: int = Field(default=42, description="Random seed of the split and the estimator.")
    metrics: list[Metric] = Field(
        default_factory=lambda: ["accuracy"],
        min_length=1,
        description="Metrics to compute on the validation split: " + ", ".join(METRICS) + ".",
    )


class Container(Model):
    """Bring your own image: MLflow run id, tracking URI and dataset location come as env."""

    image: str = Field(min_length=1, max_length=512, description="Container image.")
    command: list[str] | None = Field(default=None, description="Entrypoint override.")
    args: list[str] | None = Field(default=None, description="Arguments.")
    working_dir: str | None = Field(default=None, description="Working directory.")


class Gate(Model):
    """A condition the model's metric must meet to be registered."""

    metric: str = Field(min_length=1, description="A metric the run logs, e.g. accuracy.")
    op: ComparisonOp = Field(description="One of >=, >, <=, <, ==.")
    threshold: float = Field(description="The value to compare with.")


class Register(Model):
    """What to register when the run succeeds."""

    model_name: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="Registered model name in the MLflow registry.",
    )
    gates: list[Gate] | None = Field(
        default=None, max_length=20, description="Every gate must hold to register."
    )
    must_beat_production: str | None = Field(
        default=None,
        description=(
            "A metric on which the new model must beat the version aliased 'production' "
            "(higher is better, except for loss/error metrics such as rmse, mae, log_loss)."
        ),
    )
    approval: Literal["auto", "manual"] = Field(
        default="auto",
        description="auto: approved when the gates pass; manual: wait for spec.approved on the ModelVersion.",
    )


class MLflowSettings(Model):
    experiment: str | None = Field(
        default=None, description="Experiment name; defaults to <namespace>/<dataset>."
    )


class TrainingRunSpec(Model):
    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "has(self.trainer) != has(self.container)",
                    "set exactly one of trainer (built-in) or container (your own image)",
                ),
                cel(
                    "!has(self.trigger) || self.trigger != 'onNewDatasetVersion'"
                    " || !has(self.datasetRef.version) || self.datasetRef.version == 'latest'",
                    "trigger onNewDatasetVersion needs datasetRef.version latest",
                    ".trigger",
                ),
            ]
        )
    )

    dataset_ref: DatasetRef = Field(description="The Dataset to train on.")
    trainer: BuiltinTrainer | None = Field(default=None, description="Built-in trainer settings.")
    container: Container | None = Field(default=None, description="Your own training image.")
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of the training pod."
    )
    env: list[EnvVar] | None = Field(
        default=None,
        max_length=64,
        description="Extra environment; secrets only through valueFrom.secretKeyRef.",
    )
    scheduling: Scheduling | None = Field(
        default=None, description="Node selector and tolerations."
    )
    backoff_limit: int = Field(default=1, ge=0, le=10, description="Retries before Failed.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Wall-clock limit of the run, all attempts included."
    )
    mlflow: MLflowSettings | None = Field(default=None, description="MLflow tracking settings.")
    # `register` would shadow BaseModel.register (from ABCMeta).
    register_: Register | None = Field(
        default=None,
        alias="register",
        description="Register the model on success; omit to only train.",
    )
    trigger: Literal["once", "onNewDatasetVersion"] = Field(
        default="once",
        description="once, or onNewDatasetVersion to train again whenever the Dataset changes.",
    )

    @model_validator(mode="after")
    def _one_trainer(self) -> TrainingRunSpec:
        if (self.trainer is None) == (self.container is None):
            raise ValueError("set exactly one of trainer (built-in) or container (your own image)")
        if self.trigger == "onNewDatasetVersion" and self.dataset_ref.version != "latest":
            raise ValueError("trigger onNewDatasetVersion needs datasetRef.version latest")
        return self


class GateResult(StatusModel):
    metric: str = Field(description="Metric name.")
    op: str = Field(description="Comparison.")
    threshold: float = Field(description="Required value.")
    value: float | None = Field(default=None, description="Measured value, if logged.")
    passed: bool = Field(description="Whether the gate held.")


class Failure(StatusModel):
    reason: str = Field(description="Error, OOMKilled, DeadlineExceeded, ...")
    exit_code: int | None = Field(default=None, description="Exit code of the container.")
    message: str | None = Field(default=None, description="Explanation.")
    log_tail: str | None = Field(default=None, description="Last lines the container printed.")


class PastRound(StatusModel):
    """One earlier training of a TrainingRun that retrains on new Dataset versions."""

    dataset_version: str | None = Field(default=None, description="Dataset version trained on.")
    phase: str | None = Field(default=None, description="How it ended.")
    reason: str | None = Field(default=None, description="Its Ready reason, e.g. GateFailed.")
    mlflow_run_id: str | None = Field(default=None, description="Its MLflow run.")
    model_version: str | None = Field(default=None, description="The ModelVersion it created.")
    completion_time: datetime | None = Field(default=None, description="When it ended.")


class TrainingRunStatus(ResourceStatus):
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = Field(
        default=None, description="Pending, Running, Succeeded or Failed."
    )
    dataset_version: str | None = Field(default=None, description="Dataset version trained on.")
    mlflow_run_id: str | None = Field(default=None, description="MLflow run id.")
    mlflow_run_url: str | None = Field(default=None, description="Link to the run in MLflow's UI.")
    job_name: str | None = Field(default=None, description="The Job running the training.")
    start_time: datetime | None = Field(default=None, description="When the Job started.")
    completion_time: datetime | None = Field(default=None, description="When it ended.")
    duration_seconds: float | None = Field(default=None, description="Run time.")
    attempts: int | None = Field(default=None, description="Pods started so far.")
    metrics: dict[str, float] | None = Field(default=None, description="Validation metrics.")
    gates: list[GateResult] | None = Field(default=None, description="Gate results.")
    model_version: str | None = Field(default=None, description="The ModelVersion created.")
    failure: Failure | None = Field(default=None, description="Why the run failed.")
    rounds: int | None = Field(
        default=None, description="Trainings so far (onNewDatasetVersion trains once per version)."
    )
    history: list[PastRound] | None = Field(
        default=None, max_length=10, description="Earlier trainings, newest last (at most 10)."
    )
