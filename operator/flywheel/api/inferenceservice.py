"""InferenceService: serve a ModelVersion, roll out a canary, watch for drift, retrain."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    CRON_PATTERN,
    Duration,
    Model,
    Name,
    ResourceRequirements,
    ResourceStatus,
    Scheduling,
    StatusModel,
    cel,
    k8s,
)


class Track(Model):
    model_version: Name = Field(description="ModelVersion to serve, in the same namespace.")


class Thresholds(Model):
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Largest share of 5xx answers the canary may give."
    )
    max_p99_latency_ms: float | None = Field(
        default=None, gt=0, description="Largest p99 latency of the canary, in milliseconds."
    )


class MetricQuery(Model):
    """An extra Prometheus query that must stay under a bound during analysis."""

    name: str = Field(min_length=1, description="A name for status and Events.")
    query: str = Field(min_length=1, description="PromQL returning one number.")
    max: float = Field(description="Largest acceptable value.")


class Analysis(Model):
    """How the canary's traffic grows and what it must show at each step."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "self.stepPercent <= self.maxPercent",
                    "stepPercent must not exceed maxPercent",
                    ".stepPercent",
                )
            ]
        )
    )

    step_percent: int = Field(default=10, ge=1, le=100, description="Traffic added per step.")
    max_percent: int = Field(
        default=50, ge=1, le=100, description="Traffic at which the canary is promoted."
    )
    interval: Duration = Field(default="1m", description="Time between checks.")
    checks_per_step: int = Field(
        default=1, ge=1, le=100, description="Passing checks needed before the next step."
    )
    failure_limit: int = Field(
        default=1, ge=1, le=100, description="Failed checks that roll the canary back."
    )
    thresholds: Thresholds = Field(
        default_factory=Thresholds, description="Error-rate and latency limits."
    )
    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://.+$",
        description="Prometheus to query; without it the operator scrapes the pods' /metrics.",
    )
    queries: list[MetricQuery] | None = Field(
        default=None, max_length=10, description="Extra Prometheus checks (needs prometheusUrl)."
    )

    @model_validator(mode="after")
    def _steps(self) -> Analysis:
        if self.step_percent > self.max_percent:
            raise ValueError("stepPercent must not exceed maxPercent")
        return self


class Canary(Model):
    model_version: Name = Field(description="ModelVersion to try, in the same namespace.")
    analysis: Analysis = Field(default_factory=Analysis, description="Progressive rollout.")


class Autoscaling(Model):
    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must not exceed maxReplicas",
                    ".minReplicas",
                )
            ]
        )
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas per track.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas per track.")
    target_cpu_utilization: int = Field(
        default=70, ge=1, le=100, description="Average CPU percent the autoscaler aims at."
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


class GatewayRef(Model):
    name: Name = Field(description="Gateway the HTTPRoute attaches to.")
    namespace: Name | None = Field(default=None, description="Its namespace, if another.")


class Traffic(Model):
    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "self.router != 'gateway-api' || has(self.gatewayRef)",
                    "router gateway-api needs gatewayRef",
                    ".gatewayRef",
                )
            ]
        )
    )

    router: Literal["service", "gateway-api"] = Field(
        default="service",
        description=(
            "service: split by ready replicas behind one Service; gateway-api: an HTTPRoute "
            "with exact weights (needs the Gateway API CRDs)."
        ),
    )
    gateway_ref: GatewayRef | None = Field(default=None, description="Gateway for the HTTPRoute.")

    @model_validator(mode="after")
    def _gateway(self) -> Traffic:
        if self.router == "gateway-api" and self.gateway_ref is None:
            raise ValueError("router gateway-api needs gatewayRef")
        return self


class InferenceLogging(Model):
    enabled: bool = Field(default=True, description="Log a sample of requests for drift checks.")
    sample_rate: float = Field(
        default=1.0, ge=0, le=1, description="Share of requests logged (0 to 1)."
    )
    destination: str | None = Field(
        default=None,
        pattern=r"^(s3://[^/]+(/.*)?|file:///.+)$",
        description="Where Parquet logs go; defaults to the operator's artifact store.",
    )
    flush_interval: Duration = Field(
        default="1m",
        description="Longest time a logged row waits in memory before it is written.",
    )


class DriftReference(Model):
    dataset: Name | None = Field(
        default=None,
        description="Dataset to compare with; defaults to the serving model's training data.",
    )


class Drift(Model):
    schedule: str = Field(
        pattern=CRON_PATTERN,
        description="Cron schedule of the drift check, e.g. '*/15 * * * *' or @hourly.",
    )
    window: Duration = Field(default="1h", description="How much recent traffic to check.")
    reference: DriftReference | None = Field(default=None, description="Reference data.")
    features: list[str] | None = Field(
        default=None, description="Columns to check; defaults to the model signature's inputs."
    )
    stat_test: str | None = Field(
        default=None,
        description="Evidently statistical test for every column (e.g. psi, ks, wasserstein); default: chosen per column.",
    )
    stat_test_threshold: float | None = Field(
        default=None, gt=0, description="Threshold of that test."
    )
    threshold: float = Field(
        default=0.5, gt=0, le=1, description="Share of drifted columns that flags drift."
    )
    min_rows: int = Field(
        default=100, ge=1, description="Fewer logged rows than this is 'insufficient data'."
    )


class Monitoring(Model):
    drift: Drift | None = Field(default=None, description="Scheduled drift checks.")


class Retrain(Model):
    enabled: bool = Field(default=True, description="Retrain when drift is flagged.")
    from_training_run: Name | None = Field(
        default=None,
        description="TrainingRun to clone; defaults to the one that produced the serving model.",
    )
    cooldown: Duration = Field(default="1h", description="Least time between two retrains.")
    max_in_flight: int = Field(default=1, ge=1, le=10, description="Retrains running at once.")
    require_consecutive_detections: int = Field(
        default=1, ge=1, le=100, description="Drift verdicts in a row needed to retrain."
    )
    auto_deploy: Literal["canary", "none"] = Field(
        default="canary",
        description="canary: a retrained model that passes its gates becomes the canary.",
    )
    analysis: Analysis | None = Field(
        default=None,
        description="Canary analysis of a retrained model; default: spec.canary's, else the defaults.",
    )


class InferenceServiceSpec(Model):
    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "!has(self.canary) || self.canary.modelVersion != self.stable.modelVersion",
                    "canary must name a different ModelVersion than stable",
                    ".canary.modelVersion",
                ),
                cel(
                    "!has(self.autoscaling) || !has(self.replicas)",
                    "set replicas or autoscaling, not both",
                    ".replicas",
                ),
            ]
        )
    )

    stable: Track = Field(description="The ModelVersion that serves by default.")
    canary: Canary | None = Field(default=None, description="A ModelVersion rolled out gradually.")
    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Replicas per track (default 1)."
    )
    autoscaling: Autoscaling | None = Field(default=None, description="HorizontalPodAutoscaler.")
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of each model-server pod."
    )
    scheduling: Scheduling | None = Field(
        default=None, description="Node selector and tolerations of the model-server pods."
    )
    traffic: Traffic | None = Field(default=None, description="How traffic is split.")
    logging: InferenceLogging | None = Field(default=None, description="Inference logging.")
    monitoring: Monitoring | None = Field(default=None, description="Drift monitoring.")
    retrain: Retrain | None = Field(default=None, description="Automatic retraining policy.")

    @model_validator(mode="after")
    def _rules(self) -> InferenceServiceSpec:
        if self.canary and self.canary.model_version == self.stable.model_version:
            raise ValueError("canary must name a different ModelVersion than stable")
        if self.autoscaling is not None and self.replicas is not None:
            raise ValueError("set replicas or autoscaling, not both")
        return self


class TrackStatus(StatusModel):
    model_version: str | None = Field(default=None, description="ModelVersion on this track.")
    replicas: int | None = Field(default=None, description="Desired replicas.")
    ready_replicas: int | None = Field(default=None, description="Ready replicas.")


class TrafficStatus(StatusModel):
    stable: int = Field(default=100, description="Percent of traffic on stable.")
    canary: int = Field(default=0, description="Percent of traffic on the canary.")


class CheckFigures(StatusModel):
    time: datetime | None = Field(default=None, description="When the check ran.")
    error_rate: float | None = Field(default=None, description="Canary error rate.")
    p99_latency_ms: float | None = Field(default=None, description="Canary p99 latency.")
    passed: bool | None = Field(default=None, description="Whether the check passed.")


class Verdict(StatusModel):
    time: datetime | None = Field(default=None, description="When it was decided.")
    model_version: str | None = Field(default=None, description="The canary judged.")
    verdict: Literal["Promoted", "RolledBack"] = Field(description="Promoted or RolledBack.")
    reason: str | None = Field(default=None, description="Why.")
    replaced: str | None = Field(
        default=None, description="For a promotion: the stable ModelVersion it replaced."
    )


class AnalysisStatus(StatusModel):
    model_version: str | None = Field(default=None, description="The canary under analysis.")
    step: int | None = Field(default=None, description="Current step (1-based).")
    weight: int | None = Field(
        default=None, description="Canary traffic percent this step asks for."
    )
    window_start: datetime | None = Field(
        default=None, description="Start of the interval the next check measures."
    )
    message: str | None = Field(default=None, description="The last decision, in words.")
    checks_passed: int | None = Field(default=None, description="Passing checks at this step.")
    checks_failed: int | None = Field(default=None, description="Failed checks so far.")
    last_check: CheckFigures | None = Field(default=None, description="Last check's figures.")
    history: list[Verdict] | None = Field(
        default=None, max_length=20, description="Most recent verdicts, newest last."
    )


class DriftedFeature(StatusModel):
    name: str = Field(description="Column name.")
    score: float | None = Field(default=None, description="Test statistic or p-value.")
    drifted: bool = Field(description="Whether this column drifted.")


class DriftStatus(StatusModel):
    last_check_time: datetime | None = Field(default=None, description="When the last check ran.")
    result: Literal["NoDrift", "Drift", "InsufficientData", "Error"] | None = Field(
        default=None, description="NoDrift, Drift, InsufficientData or Error."
    )
    share: float | None = Field(default=None, description="Share of drifted columns.")
    features: list[DriftedFeature] | None = Field(default=None, description="Per-column results.")
    report_uri: str | None = Field(default=None, description="Where the Evidently report is.")
    consecutive_detections: int | None = Field(default=None, description="Drift verdicts in a row.")
    job: str | None = Field(default=None, description="The Job of the last check read.")
    message: str | None = Field(default=None, description="The last check, in words.")


class RetrainStatus(StatusModel):
    triggered: int | None = Field(default=None, description="Retrains started so far.")
    in_flight: list[str] | None = Field(default=None, description="Running retraining runs.")
    last: str | None = Field(default=None, description="Most recent retraining TrainingRun.")
    last_time: datetime | None = Field(default=None, description="When it was started.")
    last_detection: str | None = Field(
        default=None, description="The drift check (its Job) that the last decision answered."
    )
    candidate: str | None = Field(
        default=None, description="ModelVersion from a retrain, deployed as the canary."
    )
    message: str | None = Field(default=None, description="The last decision, in words.")


class InferenceServiceStatus(ResourceStatus):
    phase: Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"] | None = Field(
        default=None, description="Pending, Progressing, Ready, Degraded or Failed."
    )
    url: str | None = Field(default=None, description="In-cluster URL to call.")
    serving_model_version: str | None = Field(
        default=None,
        description="The ModelVersion serving as stable now (can differ from spec after a promotion).",
    )
    production_alias: str | None = Field(
        default=None,
        description="<model>/<registry version> the MLflow alias production was last moved to.",
    )
    stable: TrackStatus | None = Field(default=None, description="Stable track.")
    canary: TrackStatus | None = Field(default=None, description="Canary track.")
    traffic: TrafficStatus | None = Field(default=None, description="Current split.")
    analysis: AnalysisStatus | None = Field(default=None, description="Canary analysis.")
    drift: DriftStatus | None = Field(default=None, description="Last drift check.")
    retrain: RetrainStatus | None = Field(default=None, description="Retraining.")
