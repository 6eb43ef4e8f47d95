"""Least privilege and Pod Security, checked on a whole lifecycle run by the
real operator: snapshot Job, training Job, model-server Deployment and drift
CronJob, in a namespace that enforces Pod Security `restricted` (the
`namespace` fixture labels every test namespace so).

- Every workload pod runs as the namespace's `default` ServiceAccount with no
  token mounted, and that account has no API rights at all (`kubectl auth
  can-i` as it, verb by verb, here and cluster-wide).
- A Secret value a TrainingRun references reaches the training process and
  nothing else: not the status, Events or annotations of any object of any
  kind in any namespace, nor the operator's, the pod runner's or any pod's log.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from kube_helpers import wait_for
from kubernetes import client
from training_helpers import iris_run, wait_finished, wait_model_phase

pytestmark = pytest.mark.integration

# What a workload pod might try with a stolen token: all must be refused.
WORKLOAD_DENIED = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("list", "pods"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("get", "configmaps"),
    ("list", "trainingruns.mlops.flywheel.dev"),
    ("patch", "trainingruns.mlops.flywheel.dev/status"),
    ("create", "modelversions.mlops.flywheel.dev"),
    ("patch", "inferenceservices.mlops.flywheel.dev"),
    ("create", "jobs.batch"),
    ("patch", "deployments.apps"),
    ("create", "events"),
    ("create", "serviceaccounts/token"),
    ("list", "namespaces"),
    ("list", "nodes"),
]


def can(control_plane, account: str, verb: str, resource: str, where: list[str]) -> bool:
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    answer = control_plane.kubectl(
        "auth", "can-i", verb, resource, *extra, *where, "--as", account, check=False
    )
    return answer.stdout.strip() == "yes"


def lifecycle_service(model_version: str) -> dict:
    return {
        "kind": "InferenceService",
        "metadata": {"name": "iris"},
        "spec": {
            "stable": {"modelVersion": model_version},
            "logging": {"sampleRate": 1.0, "flushInterval": "3s"},
            "monitoring": {
                "drift": {"schedule": "* * * * *", "window": "1h", "minRows": 1, "threshold": 0.5}
            },
        },
    }


def cluster_state(control_plane) -> tuple[list[dict], list[str]]:
    """Every object of every listable kind in every namespace (Events included)."""
    kinds = control_plane.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    objects = []
    for kind in kinds:
        listed = control_plane.kubectl("get", kind, "-A", "-o", "json")
        objects += json.loads(listed.stdout)["items"]
    return objects, kinds


def log_files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file() and p.suffix == ".log"]


def test_workloads_have_no_api_rights_and_a_referenced_secret_leaks_nowhere(
    operator, objects, namespace, iris, kube_api, control_plane, pod_runner
):
    canary = f"canary-{secrets.token_hex(16)}"
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="team-token"), string_data={"TOKEN": canary}
        ),
    )
    run = iris_run("iris-rf", f"lp-{namespace}", [])
    run["spec"]["env"] = [
        {
            "name": "TEAM_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "team-token", "key": "TOKEN"}},
        }
    ]
    objects.create(namespace, run)
    trained = wait_finished(objects, namespace, "iris-rf")
    assert trained["phase"] == "Succeeded", trained
    wait_model_phase(objects, namespace, trained["modelVersion"], "Servable")
    objects.create(namespace, lifecycle_service(trained["modelVersion"]))

    def every_workload_ran():
        """Pods of all four workloads (the drift CronJob's within its first minute)."""
        pods = core.list_namespaced_pod(namespace).items
        components = {p.metadata.labels.get("app.kubernetes.io/component") for p in pods}
        return pods if len(components - {None}) >= 4 else None

    pods = wait_for(every_workload_ran, timeout=150, every=2, what="pods of every workload")

    # Pod Security `restricted` admitted every pod the operator asked for.
    labels = core.read_namespace(namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    refused = [
        e.message
        for e in core.list_namespaced_event(namespace).items
        if e.reason == "FailedCreate" or "PodSecurity" in (e.message or "")
    ]
    assert not refused, refused

    # No token in any workload pod, and the account they run as can do nothing.
    for pod in pods:
        assert pod.spec.service_account_name == "default", pod.metadata.name
        assert pod.spec.automount_service_account_token is False, pod.metadata.name
        mounted = [v.name for v in pod.spec.volumes or [] if v.projected]
        assert not mounted, (pod.metadata.name, mounted)
    account = f"system:serviceaccount:{namespace}:default"
    checks = 0
    for where in (["-n", namespace], ["-n", "default"], ["--all-namespaces"]):
        for verb, resource in WORKLOAD_DENIED:
            assert not can(control_plane, account, verb, resource, where), (verb, resource, where)
            checks += 1
    print(f"can-i: {checks} denied for {account}")

    # Secrets hold the value (base64); no other object may, in any field.
    state, kinds = cluster_state(control_plane)
    leaked = [
        f"{o['kind']}/{o['metadata'].get('namespace')}/{o['metadata']['name']}"
        for o in state
        if o["kind"] != "Secret" and canary in json.dumps(o)
    ]
    assert not leaked, f"the canary Secret value is in {leaked}"
    assert any(o["kind"] == "Event" for o in state)
    # The training pod asked for it (the pod runner hands it to the process) ...
    training_pods = [
        p for p in pods if p.metadata.labels.get("app.kubernetes.io/component") == "training"
    ]
    assert training_pods, [p.metadata.labels for p in pods]
    env = {e.name: e.value_from for e in training_pods[0].spec.containers[0].env}
    assert env["TEAM_TOKEN"].secret_key_ref.name == "team-token"
    # ... and no log has it: the operator's, the pod runner's, every pod's.
    logs = [operator.log, *log_files(pod_runner.work_dir)]
    assert len(logs) > 4, logs
    leaked = [str(p) for p in logs if canary in p.read_text(errors="replace")]
    assert not leaked, leaked
    size = sum(p.stat().st_size for p in logs)
    print(f"canary grep: {len(state)} objects of {len(kinds)} kinds, {len(logs)} logs ({size} B)")
