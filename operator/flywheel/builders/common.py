"""Pieces every child object shares: names, labels, owner references, and pod
settings that meet the Pod Security Standard "restricted"."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ..api.common import GROUP, Scheduling

MANAGED_BY = "flywheel"
# Kubernetes names of most children are DNS labels: 63 characters at most.
MAX_NAME = 63


def child_name(owner: str, *parts: str) -> str:
    """`<owner>-<parts...>`, shortened with a stable hash when too long."""
    name = "-".join((owner, *parts))
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"


def labels(owner: Mapping[str, Any], component: str) -> dict[str, str]:
    kind = owner["kind"]
    return {
        "app.kubernetes.io/name": "flywheel",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": component,
        f"{GROUP}/{kind.lower()}": owner["metadata"]["name"],
    }


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(owner: Mapping[str, Any], name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": labels(owner, component),
        "ownerReferences": [owner_reference(owner)],
    }


RESTRICTED_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}

RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def secret_env(secret: str, *keys: str) -> list[dict[str, Any]]:
    """Variables taken from Secret keys of the same names: by reference only."""
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in keys
    ]


def aws_secret_for(
    source_uri: str, own_secret: str | None, artifact_secret: str | None
) -> str | None:
    """The Secret with AWS keys a workload reading `source_uri` gets: the data's
    own for s3:// data that has one, otherwise the artifact store's."""
    if own_secret and source_uri.startswith("s3://"):
        return own_secret
    return artifact_secret


def fail_job_on_exit_codes(container: str, codes: list[int]) -> dict[str, Any]:
    """A podFailurePolicy that fails the Job at once on exit codes no retry can fix."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": container, "operator": "In", "values": codes},
            }
        ]
    }


def env_value(name: str, value: str | None) -> dict[str, Any]:
    """A literal container env variable; an unset value is the empty string."""
    return {"name": name, "value": value or ""}


def env_field(name: str, field_path: str) -> dict[str, Any]:
    """A container env variable from the downward API (e.g. metadata.name)."""
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def placement(scheduling: Scheduling | None) -> dict[str, Any]:
    """A pod spec's nodeSelector and tolerations from a spec's `scheduling`
    (nothing when it sets none)."""
    fields: dict[str, Any] = {}
    if scheduling and scheduling.node_selector:
        fields["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling and scheduling.tolerations:
        fields["tolerations"] = [t.to_wire() for t in scheduling.tolerations]
    return fields
