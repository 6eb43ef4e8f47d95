"""ModelVersion: one version of a registered model, kept in step with MLflow's registry."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .common import Model, ResourceStatus, cel, k8s
from .trainingrun import GateResult


class ModelSource(Model):
    """Where the model comes from: a TrainingRun, an MLflow run, or an artifact URI."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "has(self.trainingRun) || has(self.mlflowRunId) || has(self.artifactUri)",
                    "set at least one of trainingRun, mlflowRunId or artifactUri",
                )
            ]
        )
    )

    training_run: str | None = Field(default=None, description="TrainingRun that produced it.")
    mlflow_run_id: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{32}$", description="MLflow run holding the model."
    )
    artifact_uri: str | None = Field(
        default=None,
        description="Model artifact location, e.g. s3://bucket/models/x or runs:/<id>/model.",
    )

    @model_validator(mode="after")
    def _some_source(self) -> ModelSource:
        if not (self.training_run or self.mlflow_run_id or self.artifact_uri):
            raise ValueError("set at least one of trainingRun, mlflowRunId or artifactUri")
        return self


class Lineage(Model):
    """Where the model came from, recorded by the operator when it creates the object."""

    dataset: str | None = Field(default=None, description="Dataset name.")
    dataset_version: str | None = Field(default=None, description="Dataset version trained on.")
    training_run: str | None = Field(default=None, description="TrainingRun name.")
    mlflow_run_id: str | None = Field(default=None, description="MLflow run id.")
    image: str | None = Field(default=None, description="Training image (with digest if known).")
    parameters: dict[str, str] | None = Field(default=None, description="Hyperparameters.")


class ModelVersionSpec(Model):
    model_name: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="Registered model name in the MLflow registry.",
    )
    source: ModelSource = Field(description="Where the model is.")
    approval: Literal["auto", "manual"] = Field(
        default="auto",
        description="auto: servable when its gates passed; manual: servable once approved is true.",
    )
    approved: bool | None = Field(
        default=None, description="Manual approval, set by a person or a GitOps commit."
    )
    deletion_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description="Retain keeps the registry version when this object is deleted; Delete removes it.",
    )
    lineage: Lineage | None = Field(default=None, description="Provenance of the model.")


class ModelVersionStatus(ResourceStatus):
    phase: Literal["Pending", "Registered", "Servable", "Rejected", "Failed"] | None = Field(
        default=None, description="Pending, Registered, Servable, Rejected or Failed."
    )
    registry_version: str | None = Field(
        default=None, description="Version in the MLflow registry."
    )
    artifact_uri: str | None = Field(default=None, description="Where the model artifacts are.")
    aliases: list[str] | None = Field(default=None, description="Registry aliases on this version.")
    metrics: dict[str, float] | None = Field(default=None, description="Metrics of the run.")
    gates: list[GateResult] | None = Field(default=None, description="Gate results.")
    approved: bool | None = Field(default=None, description="Whether the version may be served.")
    servable: bool | None = Field(default=None, description="Registered and approved.")
