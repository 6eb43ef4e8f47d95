"""The local control plane behaves like a real, secured cluster.

Each test checks what the operator will rely on: the pinned version, Jobs that
finish, Deployments that become available, and that RBAC and PodSecurity deny.
"""

from __future__ import annotations

import json
import time

import controlplane
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

TIMEOUT = 60.0
IMAGE = "busybox:1.36"  # never pulled: kwok runs no containers


def restricted_container(name: str) -> client.V1Container:
    """A container that meets Pod Security "restricted"."""
    return client.V1Container(
        name=name,
        image=IMAGE,
        command=["true"],
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            run_as_non_root=True,
            run_as_user=65534,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
    )


def on_kwok(**spec) -> client.V1PodSpec:
    """A pod spec for kwok's fake node: it tolerates the node's taint and selects it.
    (Pods without both land on the pod runner's node, which runs them for real.)"""
    key, value = controlplane.KWOK_ANNOTATION
    return client.V1PodSpec(
        node_selector={"type": "kwok"},
        tolerations=[client.V1Toleration(key=key, value=value, effect="NoSchedule")],
        **spec,
    )


def wait_for(what: str, probe, timeout: float = TIMEOUT):
    """Poll `probe` until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout:.0f}s")
        time.sleep(0.5)


def test_apiserver_runs_the_pinned_version(kube_api):
    version = client.VersionApi(kube_api).get_code()
    assert version.git_version == controlplane.pinned_versions()["KUBE_VERSION"]


def test_job_runs_to_success(kube_api, namespace):
    batch = client.BatchV1Api(kube_api)
    pod = on_kwok(restart_policy="Never", containers=[restricted_container("main")])
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="hello"),
        spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(spec=pod)),
    )
    batch.create_namespaced_job(namespace, job)

    def finished():
        status = batch.read_namespaced_job_status("hello", namespace).status
        assert not status.failed, f"job failed: {status}"
        return status.succeeded == 1

    wait_for("job succeeded", finished)
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector="job-name")
    assert [p.status.phase for p in pods.items] == ["Succeeded"]
    assert pods.items[0].spec.node_name == "kwok-node-0"


def test_deployment_becomes_available(kube_api, namespace):
    apps = client.AppsV1Api(kube_api)
    labels = {"app": "web"}
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=on_kwok(containers=[restricted_container("web")]),
    )
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2, selector=client.V1LabelSelector(match_labels=labels), template=template
        ),
    )
    apps.create_namespaced_deployment(namespace, deployment)

    def available():
        status = apps.read_namespaced_deployment_status("web", namespace).status
        conditions = {c.type: c.status for c in status.conditions or []}
        return conditions.get("Available") == "True" and status.ready_replicas == 2

    wait_for("deployment available with 2 ready replicas", available)


def test_service_account_token_is_denied_secrets(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="probe"))
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    token = core.create_namespaced_service_account_token("probe", namespace, request).status.token

    config = client.Configuration()
    config.host = kube_api.configuration.host
    config.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(config) as as_probe:
        # The token authenticates (so a denial below is authorization, not a 401)...
        review = client.AuthenticationV1Api(as_probe).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:probe"
        # ...and RBAC grants a fresh service account nothing on Secrets.
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(as_probe).list_namespaced_secret(namespace)
    assert denied.value.status == 403


def test_pod_security_rejects_a_privileged_pod(kube_api, namespace):
    container = client.V1Container(
        name="root", image=IMAGE, security_context=client.V1SecurityContext(privileged=True)
    )
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="privileged"),
        spec=client.V1PodSpec(containers=[container]),
    )
    with pytest.raises(ApiException) as rejected:
        client.CoreV1Api(kube_api).create_namespaced_pod(namespace, pod)
    assert rejected.value.status == 403
    message = json.loads(rejected.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest": privileged' in message
