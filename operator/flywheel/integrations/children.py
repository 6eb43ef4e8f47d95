"""Server-side apply of the objects an InferenceService owns, and reading them back.

Server-side apply with one field manager makes every write idempotent and
leaves alone the fields others own (an HPA's replica count, kubectl edits of
labels): the apiserver does not even bump resourceVersion when nothing changed.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from .kube import FIELD_MANAGER, api

# apiVersion/kind -> the collection's path segment.
_PLURALS = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproutes",
    ("discovery.k8s.io/v1", "EndpointSlice"): "endpointslices",
    ("batch/v1", "CronJob"): "cronjobs",
    ("batch/v1", "Job"): "jobs",
}


def _path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{_PLURALS[(api_version, kind)]}"
    return f"{path}/{name}" if name else path


def _call(method: str, path: str, body: Any = None, query: list | None = None, content=None):
    headers = {"Accept": "application/json"}
    if content:
        headers["Content-Type"] = content
    return api().call_api(
        path,
        method,
        query_params=query or [],
        header_params=headers,
        body=body,
        response_types_map={200: "object", 201: "object", 202: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )


def apply(obj: dict[str, Any]) -> dict[str, Any]:
    """Create or update `obj` to exactly the fields given (server-side apply)."""
    meta = obj["metadata"]
    path = _path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
    query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
    return _call("PATCH", path, obj, query, content="application/apply-patch+yaml")


def delete(api_version: str, kind: str, namespace: str, name: str) -> bool:
    """Delete in the foreground of nothing (pods go with their ReplicaSets); False if absent."""
    try:
        _call("DELETE", _path(api_version, kind, namespace, name))
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _call("GET", _path(api_version, kind, namespace, name))
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def list_objects(
    api_version: str, kind: str, namespace: str, labels: dict[str, str]
) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    path = _path(api_version, kind, namespace)
    return list(_call("GET", path, query=[("labelSelector", selector)])["items"])


def list_pods(namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    return list_objects("v1", "Pod", namespace, labels)


def api_available(group_version: str) -> bool:
    """Whether the cluster serves `group/version` (e.g. the Gateway API's CRDs)."""
    try:
        _call("GET", f"/apis/{group_version}")
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True
