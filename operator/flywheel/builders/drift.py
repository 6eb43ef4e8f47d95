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
    env_field,
    env_value,
    labels,
    metadata,
    secret_env,
)
from .serving import SERVICE_LABEL, inference_logs_of

COMPONENT = "drift-check"
DEFAULT_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
# A check that has not finished in an hour is stuck; the next one starts anyway.
DEADLINE_SECONDS = 3600


def drift_cronjob_name(service: str) -> str:
    return child_name(service, "drift")


def drift_selector(service: str) -> dict[str, str]:
    return {SERVICE_LABEL: service, "app.kubernetes.io/component": COMPONENT}


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
        env_field("POD_NAME", "metadata.name"),
        env_value("FLYWHEEL_REFERENCE_URI", reference.source.uri),
        env_value("FLYWHEEL_REFERENCE_FORMAT", reference.source.format),
        env_value("FLYWHEEL_REFERENCE_VERSION", reference_version or ""),
        env_value("FLYWHEEL_CURRENT_URI", inference_logs_of(settings, spec, namespace, service)),
        env_value("FLYWHEEL_WINDOW", drift.window),
        env_value("FLYWHEEL_FEATURES", json.dumps(drift.features or [])),
        env_value("FLYWHEEL_TARGET_COLUMN", target or ""),
        env_value("FLYWHEEL_DRIFT_THRESHOLD", f"{drift.threshold:g}"),
        env_value("FLYWHEEL_MIN_ROWS", str(drift.min_rows)),
        # $(POD_NAME): one report folder per check, expanded by the kubelet.
        env_value(
            "FLYWHEEL_REPORT_URI",
            f"{settings.artifact_root}/drift/{namespace}/{service}/$(POD_NAME)",
        ),
        env_value("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri or ""),
        env_value("MLFLOW_EXPERIMENT_NAME", f"{namespace}/{service}/drift"),
    ]
    if drift.stat_test:
        env.append(env_value("FLYWHEEL_STAT_TEST", drift.stat_test))
    if drift.stat_test_threshold is not None:
        env.append(env_value("FLYWHEEL_STAT_TEST_THRESHOLD", f"{drift.stat_test_threshold:g}"))
    endpoint = reference.source.endpoint or settings.s3_endpoint
    if endpoint:
        env.append(env_value("FLYWHEEL_S3_ENDPOINT", endpoint))
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
