"""Dataset: where training data lives, what it must look like, and its versions."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    Duration,
    Model,
    Name,
    ResourceRequirements,
    ResourceStatus,
    StatusModel,
    cel,
    k8s,
)

ColumnType = Literal["integer", "float", "string", "boolean", "datetime"]


class Credentials(Model):
    """Credentials for the source, by Secret reference only."""

    secret_name: Name = Field(
        description=(
            "Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for s3://) or "
            "HTTP_AUTHORIZATION (for https://). Mounted into the snapshot pod only."
        )
    )


class Source(Model):
    """Where the data is read from."""

    uri: str = Field(
        pattern=r"^(s3://[^/]+(/.*)?|file:///.+|https?://.+)$",
        max_length=2048,
        description=(
            "s3://bucket/prefix, file:///path (on a volume mounted into the snapshot pod) or "
            "https://host/path. A prefix covers every object under it."
        ),
    )
    format: Literal["csv", "parquet"] = Field(description="File format: csv or parquet.")
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://.+$",
        description="S3-compatible endpoint URL, for stores other than AWS S3.",
    )
    region: str | None = Field(default=None, description="S3 region, if the store needs one.")
    credentials: Credentials | None = Field(default=None, description="How to authenticate.")
    volume_claim: Name | None = Field(
        default=None, description="PersistentVolumeClaim holding file:// data, mounted read-only."
    )


class Column(Model):
    """One declared column and the rules its values must meet."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "min must not be greater than max",
                )
            ]
        )
    )

    name: str = Field(min_length=1, max_length=256, description="Column name as in the file.")
    type: ColumnType = Field(description="integer, float, string, boolean or datetime.")
    nullable: bool = Field(default=True, description="Whether empty values are allowed.")
    min: float | None = Field(default=None, description="Smallest allowed value (numeric columns).")
    max: float | None = Field(default=None, description="Largest allowed value (numeric columns).")
    allowed_values: list[str] | None = Field(
        default=None, max_length=1000, description="The only values allowed (categorical columns)."
    )

    @model_validator(mode="after")
    def _range(self) -> Column:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not be greater than max")
        return self


class DataSchema(Model):
    """The columns the data must have."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "!has(self.target) || self.columns.exists(c, c.name == self.target)",
                    "target must be one of the declared columns",
                    ".target",
                )
            ]
        )
    )

    columns: list[Column] = Field(
        min_length=1,
        max_length=1000,
        description="Declared columns. Columns in the data but not listed here are kept as is.",
        json_schema_extra=k8s(list_type="map", list_map_keys=["name"]),
    )
    target: str | None = Field(
        default=None, description="The label column that training predicts, if any."
    )

    @model_validator(mode="after")
    def _target_declared(self) -> DataSchema:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("columns: each name may appear once")
        if self.target is not None and self.target not in names:
            raise ValueError("target must be one of the declared columns")
        return self


class Quality(Model):
    """Rules over the whole data set."""

    min_rows: int | None = Field(default=None, ge=0, description="Fewest rows accepted.")
    max_null_fraction: float | None = Field(
        default=None, ge=0, le=1, description="Largest share of empty values in any column."
    )


class DatasetSpec(Model):
    source: Source = Field(description="Where the data lives.")
    schema_: DataSchema | None = Field(
        default=None, alias="schema", description="Columns, types and the target column."
    )
    quality: Quality | None = Field(default=None, description="Data-quality rules.")
    refresh_interval: Duration | None = Field(
        default=None,
        description="Re-snapshot this often (e.g. 1h); a new content hash is a new version.",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of the snapshot pod."
    )


class ValidationFailure(StatusModel):
    rule: str = Field(description="The rule that failed, e.g. notNull, min, type.")
    column: str | None = Field(default=None, description="The column it failed on.")
    message: str = Field(description="What was found.")


class ValidationResult(StatusModel):
    passed: bool = Field(description="True when every schema and quality rule held.")
    failures: list[ValidationFailure] = Field(
        default_factory=list, description="Up to 20 failed rules."
    )


class ProfileSummary(StatusModel):
    columns: int | None = Field(default=None, description="Number of columns.")
    null_cells: int | None = Field(default=None, description="Empty cells in all columns.")
    bytes: int | None = Field(default=None, description="Total size of the source objects.")
    objects: int | None = Field(default=None, description="Number of source objects.")


class SnapshotAttempt(StatusModel):
    """The most recent snapshot Job; its sequence number names it, so an
    operator restarted mid-way finds the Job it created instead of a second one."""

    sequence: int = Field(description="Attempt number; the Job is <dataset>-snapshot-<sequence>.")
    job_name: str = Field(description="The snapshot Job.")
    generation: int | None = Field(default=None, description="metadata.generation it snapshots.")
    state: Literal["Running", "Succeeded", "Failed"] = Field(
        description="Running, Succeeded or Failed."
    )
    start_time: datetime | None = Field(default=None, description="When the Job was created.")
    finish_time: datetime | None = Field(default=None, description="When its result was read.")


class DatasetStatus(ResourceStatus):
    phase: Literal["Pending", "Snapshotting", "Ready", "Failed"] | None = Field(
        default=None, description="Pending, Snapshotting, Ready or Failed."
    )
    version: str | None = Field(
        default=None, description="Content hash of the data (sha256); the dataset version."
    )
    rows: int | None = Field(default=None, description="Rows in the current version.")
    profile: ProfileSummary | None = Field(default=None, description="Profile summary.")
    profile_uri: str | None = Field(default=None, description="Where the full profile is stored.")
    validation: ValidationResult | None = Field(default=None, description="Validation result.")
    last_snapshot_time: datetime | None = Field(
        default=None, description="When the last snapshot finished."
    )
    snapshot: SnapshotAttempt | None = Field(default=None, description="The latest snapshot Job.")
