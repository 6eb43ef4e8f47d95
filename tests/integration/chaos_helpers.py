"""Counting what the operator made, as a user would check after an outage:
children by owner, MLflow runs and registry versions by their tags."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from mlflow import MlflowClient

from flywheel.api.common import GROUP, VERSION
from flywheel.api.kinds import BY_KIND
from flywheel.builders.common import RESTRICTED_CONTAINER_SECURITY, RESTRICTED_POD_SECURITY
from flywheel.builders.drift import drift_selector

ROOT = Path(__file__).resolve().parents[2]


def samples() -> list[dict]:
    """The four sample objects of manifests/samples: the whole loop."""
    docs = []
    for path in sorted((ROOT / "manifests" / "samples").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] in BY_KIND]
    return docs


# Where each kind's status is final: the whole loop of the samples has run.
SETTLED = {
    "Dataset": {"Ready"},
    "TrainingRun": {"Succeeded", "Failed"},
    "ModelVersion": {"Servable", "Failed"},
    "InferenceService": {"Ready", "Failed"},
}


def owned_by(items: list[Any], uid: str) -> list[Any]:
    def owners(item):
        meta = item.metadata if hasattr(item, "metadata") else item["metadata"]
        refs = (
            meta.owner_references
            if hasattr(meta, "owner_references")
            else meta.get("ownerReferences")
        )
        return refs or []

    def uid_of(ref):
        return ref.uid if hasattr(ref, "uid") else ref["uid"]

    return [i for i in items if any(uid_of(r) == uid for r in owners(i))]


def children(kube_api, namespace: str, uid: str) -> dict[str, list[str]]:
    """Names of the Jobs, Deployments, Services, CronJobs and Flywheel objects
    whose controller is the object with `uid`."""
    batch, apps = client.BatchV1Api(kube_api), client.AppsV1Api(kube_api)
    core, custom = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    found = {
        "Job": owned_by(batch.list_namespaced_job(namespace).items, uid),
        "CronJob": owned_by(batch.list_namespaced_cron_job(namespace).items, uid),
        "Deployment": owned_by(apps.list_namespaced_deployment(namespace).items, uid),
        "Service": owned_by(core.list_namespaced_service(namespace).items, uid),
    }
    names = {kind: [i.metadata.name for i in items] for kind, items in found.items()}
    for kind in BY_KIND.values():
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)
        names[kind.kind] = [i["metadata"]["name"] for i in owned_by(listed["items"], uid)]
    return {kind: sorted(n) for kind, n in names.items() if n}


def mlflow_runs(tracking_uri: str, experiment: str, training_run: str) -> list[str]:
    mlflow = MlflowClient(tracking_uri=tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = mlflow.search_runs(
        [found.experiment_id], filter_string=f"tags.`flywheel.trainingrun` = '{training_run}'"
    )
    return [r.info.run_id for r in runs]


def registry_versions(tracking_uri: str, model: str, namespace: str, name: str) -> list[str]:
    """Registry versions registered for ModelVersion `namespace/name`."""
    mlflow = MlflowClient(tracking_uri=tracking_uri)
    tag = f"{namespace}/{name}"
    versions = mlflow.search_model_versions(f"name = '{model}'")
    return [v.version for v in versions if v.tags.get("flywheel.modelversion") == tag]


def phase(objects, namespace: str, kind: str, name: str) -> str | None:
    return (objects.get(namespace, kind, name).get("status") or {}).get("phase")


def converged(objects, namespace: str, kind: str, name: str) -> bool:
    got = objects.get(namespace, kind, name)
    status = got.get("status") or {}
    return status.get("phase") in SETTLED[kind] and status.get("observedGeneration") == got[
        "metadata"
    ].get("generation")


def resource_versions(objects, namespace: str, pairs: list[tuple[str, str]]) -> dict:
    return {pair: objects.get(namespace, *pair)["metadata"]["resourceVersion"] for pair in pairs}


def still(objects, namespace: str, pairs: list[tuple[str, str]], seconds: float) -> tuple:
    """resourceVersions before and after `seconds`: equal when nothing flaps."""
    before = resource_versions(objects, namespace, pairs)
    time.sleep(seconds)
    return before, resource_versions(objects, namespace, pairs)


def drift_check_job(service: str, name: str) -> dict:
    """A finished drift check of `service` that found drift, as the drift
    CronJob's Job leaves it: the same labels, the verdict in the pod's
    termination message. It runs for real on the pod-runner node; only the
    verdict is fixed, so no traffic is needed."""
    verdict = {
        "ok": True,
        "result": "Drift",
        "share": 0.75,
        "threshold": 0.5,
        "rows": {"reference": 150, "current": 150},
        "features": [{"name": "petal_length", "score": 0.001, "drifted": True}],
    }
    script = f"open('/dev/termination-log', 'w').write({json.dumps(json.dumps(verdict))})"
    pod = {
        "restartPolicy": "Never",
        "securityContext": RESTRICTED_POD_SECURITY,
        "containers": [
            {
                "name": "check",
                "image": "flywheel:dev",
                "command": ["python", "-c", script],
                "securityContext": RESTRICTED_CONTAINER_SECURITY,
            }
        ],
    }
    labels = drift_selector(service)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels}, "spec": pod}},
    }


def job_complete(kube_api, namespace: str, name: str) -> bool:
    job = client.BatchV1Api(kube_api).read_namespaced_job(name, namespace)
    return bool(job.status.completion_time)
