"""Types shared by the four resources.

Every model here is both the operator's parser and the source of the CRD
schema: field descriptions become `kubectl explain` text, `json_schema_extra`
carries the Kubernetes extensions (CEL rules, int-or-string, map types).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "mlops.flywheel.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# A Kubernetes object name (RFC 1123 subdomain), as the apiserver checks it.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Go-style durations limited to what people write in manifests: 30s, 5m, 1h30m.
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
# Five-field cron or a @macro, the forms a CronJob accepts. Each field is a
# list of numbers, ranges, steps, `*`, `?` or month/day names.
_CRON_FIELD = r"[0-9A-Za-z*?/,\-]+"
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    rf"|{_CRON_FIELD}( {_CRON_FIELD}){{4}})$"
)
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> timedelta:
    """'1h30m' -> timedelta(hours=1, minutes=30). The pattern is checked first."""
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def k8s(**extensions: Any) -> dict[str, Any]:
    """Schema extensions for a field, written with their Kubernetes names."""
    return {f"x-kubernetes-{key.replace('_', '-')}": value for key, value in extensions.items()}


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry. The same rule is enforced in Python
    by the model's validator, and tests check both reject the same objects."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class Model(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(Model):
    """Status is written by the operator; tolerate fields a newer one added."""

    model_config = ConfigDict(extra="ignore")


Name = Annotated[str, Field(min_length=1, max_length=253, pattern=NAME_PATTERN)]
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]
Quantity = Annotated[
    int | str,
    Field(json_schema_extra=k8s(int_or_string=True)),
]


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """A standard Kubernetes condition."""

    type: str = Field(description="Condition type, such as Ready or Accepted.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="One CamelCase word a program can match on.")
    message: str = Field(default="", description="What happened and what to do about it.")
    last_transition_time: datetime | None = Field(
        default=None, description="When status last changed (not when it was last checked)."
    )
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this condition was computed for."
    )


class LocalObjectReference(Model):
    name: Name = Field(description="Name of the object in the same namespace.")


class SecretKeySelector(Model):
    name: Name = Field(description="Name of a Secret in the same namespace.")
    key: str = Field(min_length=1, description="Key inside the Secret.")


class EnvVarSource(Model):
    secret_key_ref: SecretKeySelector = Field(
        description="Take the value from a Secret key. Secrets are passed by reference only."
    )


class EnvVar(Model):
    """An environment variable for the workload, by value or from a Secret."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "has(self.value) != has(self.valueFrom)",
                    "set exactly one of value or valueFrom",
                )
            ]
        )
    )

    name: str = Field(
        min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Variable name."
    )
    value: str | None = Field(default=None, description="Literal value. Never put secrets here.")
    value_from: EnvVarSource | None = Field(default=None, description="Value from a Secret key.")

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError("set exactly one of value or valueFrom")
        return self


class ResourceRequirements(Model):
    """CPU, memory and accelerators, as in a Pod's container resources."""

    requests: dict[str, Quantity] | None = Field(
        default=None, description="Guaranteed amounts, e.g. {cpu: 500m, memory: 1Gi}."
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Upper bounds, e.g. {memory: 2Gi, nvidia.com/gpu: 1}."
    )


class Toleration(Model):
    key: str | None = Field(default=None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal."
    )
    value: str | None = Field(default=None, description="Taint value for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class Scheduling(Model):
    """Where the workload's pods may run."""

    node_selector: dict[str, str] | None = Field(
        default=None, description="Node labels the pods require."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, description="Taints the pods tolerate.", max_length=32
    )


class ResourceStatus(StatusModel):
    """Fields every Flywheel status has."""

    phase: str | None = Field(default=None, description="Where the object is in its life.")
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Accepted (spec is valid and references resolve) and Ready, among others.",
        json_schema_extra=k8s(list_type="map", list_map_keys=["type"]),
    )
    flywheel: dict[str, Any] | None = Field(
        default=None,
        description=(
            "The operator's own bookkeeping (kopf's): the spec it last handled,"
            " which tells it an edit from a no-op, and a handler's retries."
            " Not for people to edit."
        ),
        json_schema_extra=k8s(preserve_unknown_fields=True),
    )
