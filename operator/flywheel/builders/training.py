"""The Job that trains: the built-in `flywheel train`, or the user's own image.

Either way the pod gets the same environment, so any training code that uses
MLflow logs into the run the operator created, and finds its data by env."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..api.dataset import DatasetSpec
from ..api.trainingrun import TrainingRunSpec
from ..settings import Settings
from .common import (
    RESTRICTED_CONTAINER_SECURITY,
    RESTRICTED_POD_SECURITY,
    aws_secret_for,
    child_name,
    env_value,
    fail_job_on_exit_codes,
    metadata,
    placement,
    secret_env,
)

COMPONENT = "training"
# Exit codes of `flywheel train` that a retry cannot fix (bad spec, unknown
# estimator, bad hyperparameters, inapplicable metric, bad data, changed data).
PERMANENT_EXIT_CODES = [11, 12, 13, 14, 20, 21, 22, 23, 24]
DEFAULT_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


def training_job_name(run_name: str, dataset_version: str) -> str:
    return child_name(run_name, "train", dataset_version[:10])


def output_uri(settings: Settings, namespace: str, run: str, run_id: str) -> str:
    return f"{settings.artifact_root}/training/{namespace}/{run}/{run_id}"


def build_training_job(
    run: Mapping[str, Any],
    spec: TrainingRunSpec,
    dataset: DatasetSpec,
    dataset_version: str,
    mlflow_run_id: str,
    experiment: str,
    settings: Settings,
) -> dict[str, Any]:
    name, namespace = run["metadata"]["name"], run["metadata"]["namespace"]
    env = [
        env_value("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri),
        env_value("MLFLOW_RUN_ID", mlflow_run_id),
        env_value("MLFLOW_EXPERIMENT_NAME", experiment),
        env_value("FLYWHEEL_DATASET_URI", dataset.source.uri),
        env_value("FLYWHEEL_DATASET_FORMAT", dataset.source.format),
        env_value("FLYWHEEL_DATASET_VERSION", dataset_version),
        env_value("FLYWHEEL_OUTPUT_URI", output_uri(settings, namespace, name, mlflow_run_id)),
    ]
    endpoint = dataset.source.endpoint or settings.s3_endpoint
    if endpoint:
        env.append(env_value("FLYWHEEL_S3_ENDPOINT", endpoint))
    target = (spec.trainer and spec.trainer.target_column) or (
        dataset.schema_.target if dataset.schema_ else None
    )
    if target:
        env.append(env_value("FLYWHEEL_TARGET_COLUMN", target))
    env += _data_credentials(dataset, settings)
    if spec.trainer:
        env.append(
            env_value("FLYWHEEL_TRAINER", json.dumps(spec.trainer.to_wire(), sort_keys=True))
        )
        container = {"image": settings.image, "command": ["flywheel", "train"]}
        container["imagePullPolicy"] = settings.image_pull_policy
    else:
        own = spec.container
        container = {"image": own.image}
        container.update({k: v for k, v in (("command", own.command), ("args", own.args)) if v})
        if own.working_dir:
            container["workingDir"] = own.working_dir
    # The user's variables come last so they can override ours on purpose.
    env += [e.to_wire() for e in spec.env or []]
    container.update(
        {
            "name": "train",
            "env": env,
            "resources": spec.resources.to_wire() if spec.resources else DEFAULT_RESOURCES,
            "securityContext": RESTRICTED_CONTAINER_SECURITY,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }
    )
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": RESTRICTED_POD_SECURITY,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    pod.update(placement(spec.scheduling))
    meta = metadata(run, training_job_name(name, dataset_version), COMPONENT)
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "ttlSecondsAfterFinished": 86400,
        "template": {"metadata": {"labels": dict(meta["labels"])}, "spec": pod},
    }
    if spec.trainer:
        job_spec["podFailurePolicy"] = fail_job_on_exit_codes("train", PERMANENT_EXIT_CODES)
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def _data_credentials(dataset: DatasetSpec, settings: Settings) -> list[dict[str, Any]]:
    own = dataset.source.credentials.secret_name if dataset.source.credentials else None
    aws = aws_secret_for(dataset.source.uri, own, settings.artifact_secret)
    return secret_env(aws, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if aws else []
