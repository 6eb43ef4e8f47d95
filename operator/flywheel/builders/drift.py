"""The drift CronJob of an InferenceService: `flywheel drift-check` on a schedule.

The pod gets no Kubernetes credentials (automountServiceAccountToken false):
it reads the artifact store and MLflow, and answers through its termination
message, which the operator reads from the finished Job."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..api.dataset import DatasetSpec
from ..api.inferenceservice import InferenceServiceSpec
from ..settings import Settings
from .common import (
    RESTRICTED_CONTAINER_SECURITY,
    RESTRICTED_POD_SECURITY,
    aws_secret_for,
    child_name,
    labels,
    metadata,
    secret_env,
)
from .serving import SERVICE_LABEL

COMPONENT = "drift-check"
DEFAULT_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
# A check that has not finished in an hour is stuck; the next one starts anyway.
DEADLINE_SECONDS = 3600


def drift_cronjob_name(service: str) -> str:
    return child_name(service, "drift")


def drift_selector(service: str) -> dict[str, str]:
    return {SERVICE_LABEL: service, "app.kubernetes.io/component": COMPONENT}


def inference_logs_of(
    settings: Settings, spec: InferenceServiceSpec, namespace: str, service: str
) -> str:
    """The prefix every track's model server logs under (one folder per ModelVersion)."""
    destination = spec.logging.destination if spec.logging else None
    root = destination or f"{settings.artifact_root}/inference-logs"
    return f"{root.rstrip('/')}/{namespace}/{service}"


def build_drift_cronjob(
    isvc: Mapping[str, Any],
    spec: InferenceServiceSpec,
    reference: DatasetSpec,
    reference_version: str | None,
    settings: Settings,
) -> dict[str, Any]:
    drift = spec.monitoring.drift if spec.monitoring else None
    assert drift is not None
    service, namespace = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
    target = reference.schema_.target if reference.schema_ else None
    env = [
        _value("POD_NAME", None, field="metadata.name"),
        _value("FLYWHEEL_REFERENCE_URI", reference.source.uri),
        _value("FLYWHEEL_REFERENCE_FORMAT", reference.source.format),
        _value("FLYWHEEL_REFERENCE_VERSION", reference_version or ""),
        _value("FLYWHEEL_CURRENT_URI", inference_logs_of(settings, spec, namespace, service)),
        _value("FLYWHEEL_WINDOW", drift.window),
        _value("FLYWHEEL_FEATURES", json.dumps(drift.features or [])),
        _value("FLYWHEEL_TARGET_COLUMN", target or ""),
        _value("FLYWHEEL_DRIFT_THRESHOLD", f"{drift.threshold:g}"),
        _value("FLYWHEEL_MIN_ROWS", str(drift.min_rows)),
        # $(POD_NAME): one report folder per check, expanded by the kubelet.
        _value(
            "FLYWHEEL_REPORT_URI",
            f"{settings.artifact_root}/drift/{namespace}/{service}/$(POD_NAME)",
        ),
        _value("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri or ""),
        _value("MLFLOW_EXPERIMENT_NAME", f"{namespace}/{service}/drift"),
    ]
    if drift.stat_test:
        env.append(_value("FLYWHEEL_STAT_TEST", drift.stat_test))
    if drift.stat_test_threshold is not None:
        env.append(_value("FLYWHEEL_STAT_TEST_THRESHOLD", f"{drift.stat_test_threshold:g}"))
    endpoint = reference.source.endpoint or settings.s3_endpoint
    if endpoint:
        env.append(_value("FLYWHEEL_S3_ENDPOINT", endpoint))
    own = reference.source.credentials.secret_name if reference.source.credentials else None
    secret = aws_secret_for(reference.source.uri, own, settings.artifact_secret)
    if secret:
        env += secret_env(secret, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    container = {
        "name": "drift-check",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["flywheel", "drift-check"],
        "env": env,
        "resources": DEFAULT_RESOURCES,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    job_labels = {**labels(isvc, COMPONENT), SERVICE_LABEL: service}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {**metadata(isvc, drift_cronjob_name(service), COMPONENT)},
        "spec": {
            "schedule": drift.schedule,
            # Checks of overlapping windows would count one shift twice.
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": job_labels},
                "spec": {
                    "backoffLimit": 1,
                    "activeDeadlineSeconds": DEADLINE_SECONDS,
                    "ttlSecondsAfterFinished": 86400,
                    "template": {
                        "metadata": {"labels": job_labels},
                        "spec": {
                            "restartPolicy": "Never",
                            "automountServiceAccountToken": False,
                            "securityContext": RESTRICTED_POD_SECURITY,
                            "containers": [container],
                            "volumes": [{"name": "tmp", "emptyDir": {}}],
                        },
                    },
                },
            },
        },
    }


def _value(name: str, value: str | None, field: str | None = None) -> dict[str, Any]:
    if field:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}}
    return {"name": name, "value": value or ""}
