"""Kubernetes calls the controllers make beyond what kopf does for them.

Every write is idempotent: children have deterministic names, so "already
exists" means an earlier reconcile (perhaps before a restart) made it."""

from __future__ import annotations

import json
import threading
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api.common import GROUP, VERSION
from . import watched

FIELD_MANAGER = "flywheel"
# One pooled connection per handler thread: controllers/startup.py gives kopf
# this many (execution.max_workers). The client's default, 5 per core, is 10 on two
# cores: with 16 reconciles at once the pool threw a connection away after
# most calls ("Connection pool is full, discarding connection" in the scale
# benchmark's log) and the next call paid a new TLS handshake. 32, not 16: a
# reconcile spends most of its time waiting for the apiserver's answers: at
# N = 1,000 the scale benchmark's operator gave 28.5 TrainingRuns and 12.4
# InferenceServices their children a second with 32, 20.2 and 7.0 with 16
# (separate runs).
POOL_CONNECTIONS = 32
_lock = threading.Lock()
_api: client.ApiClient | None = None


def api() -> client.ApiClient:
    """One shared client, configured in-cluster or from KUBECONFIG."""
    global _api
    with _lock:
        if _api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = POOL_CONNECTIONS
            _api = client.ApiClient(configuration)
        return _api


def ensure_job(job: dict[str, Any]) -> dict[str, Any]:
    """Create the Job unless it exists; return what the cluster has."""
    batch = client.BatchV1Api(api())
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    try:
        created = _plain(batch.create_namespaced_job(namespace, job, field_manager=FIELD_MANAGER))
    except ApiException as err:
        if err.status != 409:
            raise
        created = _plain(batch.read_namespaced_job(name, namespace))
    watched.remember(("batch/v1", "Job", namespace, name), created)
    return created


def job_pods(namespace: str, job_name: str) -> list[dict[str, Any]]:
    pods = client.CoreV1Api(api()).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
    )
    return [_plain(p) for p in pods.items]


def get_custom(namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    try:
        return client.CustomObjectsApi(api()).get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name
        )
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def patch_status(namespace: str, plural: str, name: str, status: dict[str, Any]) -> None:
    client.CustomObjectsApi(api()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, name, {"status": status}
    )


def _plain(obj: Any) -> dict[str, Any]:
    """A client model as the plain dict (camelCase keys) the API would send."""
    return json.loads(json.dumps(api().sanitize_for_serialization(obj)))


def ensure_custom(obj: dict[str, Any]) -> dict[str, Any]:
    """Create a Flywheel object unless it exists; return what the cluster has."""
    from ..api.kinds import BY_KIND

    plural = BY_KIND[obj["kind"]].plural
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    api_ = client.CustomObjectsApi(api())
    try:
        return api_.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, obj, field_manager=FIELD_MANAGER
        )
    except ApiException as err:
        if err.status != 409:
            raise
    return api_.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
