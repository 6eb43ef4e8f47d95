"""The Job that snapshots a Dataset: `flywheel dataset-snapshot` in the workload image."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from ..api.dataset import DatasetSpec
from ..settings import Settings
from .common import (
    RESTRICTED_CONTAINER_SECURITY,
    RESTRICTED_POD_SECURITY,
    aws_secret_for,
    child_name,
    fail_job_on_exit_codes,
    metadata,
    secret_env,
)

COMPONENT = "dataset-snapshot"
# Exit codes of `flywheel dataset-snapshot` that no retry can fix (access
# denied, nothing to read, unreadable data, invalid spec): fail the Job at once.
PERMANENT_EXIT_CODES = [11, 12, 13, 14]
DEFAULT_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def snapshot_job_name(dataset_name: str, sequence: int) -> str:
    return child_name(dataset_name, "snapshot", str(sequence))


def profile_uri(settings: Settings, namespace: str, name: str, sequence: int) -> str:
    return f"{settings.artifact_root}/datasets/{namespace}/{name}/profile-{sequence}.json"


def build_snapshot_job(
    dataset: Mapping[str, Any], spec: DatasetSpec, sequence: int, settings: Settings
) -> dict[str, Any]:
    """The snapshot Job for attempt number `sequence` of this Dataset."""
    name = dataset["metadata"]["name"]
    namespace = dataset["metadata"]["namespace"]
    volumes, mounts = _volumes(spec)
    container = {
        "name": "snapshot",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["flywheel", "dataset-snapshot"],
        "env": [
            {"name": "FLYWHEEL_DATASET_SPEC", "value": json.dumps(spec.to_wire(), sort_keys=True)},
            {
                "name": "FLYWHEEL_PROFILE_URI",
                "value": profile_uri(settings, namespace, name, sequence),
            },
            *(
                [{"name": "FLYWHEEL_S3_ENDPOINT", "value": settings.s3_endpoint}]
                if settings.s3_endpoint
                else []
            ),
            *_credentials(spec, settings),
        ],
        "resources": spec.resources.to_wire() if spec.resources else DEFAULT_RESOURCES,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        # The result travels in the termination message; if the command dies
        # before writing it, the last log lines take its place.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    meta = metadata(dataset, snapshot_job_name(name, sequence), COMPONENT)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 3600,
            # Kept a day for `kubectl logs`; the operator reads the result long before.
            "ttlSecondsAfterFinished": 86400,
            "podFailurePolicy": fail_job_on_exit_codes("snapshot", PERMANENT_EXIT_CODES),
            "template": {
                "metadata": {"labels": dict(meta["labels"])},
                "spec": {
                    "restartPolicy": "Never",
                    # Workloads get no Kubernetes API rights at all.
                    "automountServiceAccountToken": False,
                    "securityContext": RESTRICTED_POD_SECURITY,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _credentials(spec: DatasetSpec, settings: Settings) -> list[dict[str, Any]]:
    """The Dataset's own credentials for its source; the artifact store's for
    the profile (and for s3:// data without its own)."""
    own = spec.source.credentials.secret_name if spec.source.credentials else None
    env = (
        secret_env(own, "HTTP_AUTHORIZATION") if own and spec.source.uri.startswith("http") else []
    )
    aws = aws_secret_for(spec.source.uri, own, settings.artifact_secret)
    return env + (secret_env(aws, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if aws else [])


def _volumes(spec: DatasetSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # The root filesystem is read-only; pyarrow needs a scratch /tmp for
    # Parquet fetched from object stores.
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if spec.source.volume_claim:
        # file:///data/iris.csv with a claim: the claim is mounted read-only at
        # the first directory of the path (/data).
        top = "/" + urlparse(spec.source.uri).path.strip("/").split("/")[0]
        volumes.append(
            {
                "name": "data",
                "persistentVolumeClaim": {"claimName": spec.source.volume_claim, "readOnly": True},
            }
        )
        mounts.append({"name": "data", "mountPath": top, "readOnly": True})
    return volumes, mounts
