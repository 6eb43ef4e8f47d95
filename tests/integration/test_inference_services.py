"""InferenceServices end to end: `flywheel serve` pods on the pod-runner node,
loading models from the real MLflow registry, answering real requests, and a
canary the operator promotes or rolls back from the pods' own metrics.
"""

from __future__ import annotations

import time

import controlplane
import pytest
from kube_helpers import RESYNC_SECONDS, WRITE_VERBS, apiserver_requests, wait_for
from kubernetes import client
from serving_helpers import (
    Traffic,
    fast_analysis,
    log_broken_model,
    log_sklearn_model,
    model_version,
)
from sklearn.linear_model import LogisticRegression
from training_helpers import ready_condition, wait_model_phase

pytestmark = pytest.mark.integration
GROUP, VERSION = "mlops.flywheel.dev", "v1alpha1"


@pytest.fixture
def models(operator, objects, namespace, mlflow_server, tmp_path, artifact_secret):
    """Three servable ModelVersions of one registered model: iris-a and iris-b
    (sound), iris-broken (fails every call)."""
    model = f"iris-{namespace}"
    logged = {
        "iris-a": log_sklearn_model(
            mlflow_server.tracking_uri, namespace, LogisticRegression(max_iter=300)
        ),
        "iris-b": log_sklearn_model(
            mlflow_server.tracking_uri, namespace, LogisticRegression(C=0.05, max_iter=300)
        ),
        "iris-broken": log_broken_model(mlflow_server.tracking_uri, namespace, tmp_path),
    }
    versions = {}
    for name, (run_id, uri) in logged.items():
        objects.create(namespace, model_version(name, model, run_id, uri))
    for name in logged:
        versions[name] = wait_model_phase(objects, namespace, name, "Servable")
    return model, versions


def service(name, stable, canary=None, **spec):
    body = {
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"stable": {"modelVersion": stable}, **spec},
    }
    if canary:
        body["spec"]["canary"] = canary
    return body


def status_of(objects, namespace, name):
    return objects.get(namespace, "InferenceService", name).get("status") or {}


def wait_phase(objects, namespace, name, phase, reason=None, timeout=180):
    def reached():
        status = status_of(objects, namespace, name)
        ok = status.get("phase") == phase
        if reason:
            ok = ok and ready_condition(status).get("reason") == reason
        return status if ok else None

    try:
        return wait_for(reached, timeout=timeout, what=f"{name} {phase} {reason or ''}")
    except BaseException:
        print("InferenceService status:", status_of(objects, namespace, name))
        raise


def env_of(deployment) -> dict[str, str]:
    container = deployment.spec.template.spec.containers[0]
    return {e.name: e.value for e in container.env if e.value is not None}


def events_of(kube_api, namespace, name):
    items = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
    return [(e.type, e.reason, e.message) for e in items if e.involved_object.name == name]


def test_a_pod_no_node_takes_is_named_until_spec_scheduling_places_it(
    operator, objects, namespace, models, kube_api
):
    """The real scheduler finds no node for the stable pod: status says so in
    the scheduler's words and names spec.scheduling; setting it to the fake
    node's selector and toleration moves the pods there, and the service is
    Ready. A canary whose pods find no node says so in its analysis."""
    nowhere = {"nodeSelector": {"flywheel.dev/pool": "none-such"}}
    objects.create(namespace, service("placed", "iris-a", scheduling=nowhere))
    status = wait_phase(objects, namespace, "placed", "Pending", reason="Unschedulable")
    message = ready_condition(status)["message"]
    assert message.startswith("waiting for a ready model-server pod for iris-a: pod placed-stable-")
    assert "cannot be scheduled: 0/" in message
    assert "didn't match Pod's node affinity/selector" in message
    assert message.endswith(
        "(spec.scheduling sets its nodeSelector and tolerations; "
        "or add nodes or capacity that fit it)"
    )
    assert ("Normal", "Unschedulable") in {e[:2] for e in events_of(kube_api, namespace, "placed")}

    key, value = controlplane.KWOK_ANNOTATION
    toleration = {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
    fake_node = {
        "nodeSelector": {"flywheel.dev/pool": None, "type": "kwok"},
        "tolerations": [toleration],
    }
    objects.patch(namespace, "InferenceService", "placed", {"spec": {"scheduling": fake_node}})
    status = wait_phase(objects, namespace, "placed", "Ready")
    assert status["stable"]["readyReplicas"] == 1
    pods = (
        client.CoreV1Api(kube_api)
        .list_namespaced_pod(namespace, label_selector=f"{GROUP}/inferenceservice=placed")
        .items
    )
    placed = [p for p in pods if not p.metadata.deletion_timestamp]
    assert [p.spec.node_name for p in placed] == [controlplane.NODE_NAME]
    assert placed[0].spec.node_selector == {"type": "kwok"}

    # A canary whose pods find no node: the stable pod keeps serving (the
    # stable Deployment's new pod waits too, maxUnavailable 0), and the
    # analysis says why the canary is not judged.
    canary = {"modelVersion": "iris-b", "analysis": fast_analysis()}
    nowhere_again = {"nodeSelector": {"type": None, "flywheel.dev/pool": "none-such"}}
    objects.patch(
        namespace,
        "InferenceService",
        "placed",
        {"spec": {"canary": canary, "scheduling": nowhere_again}},
    )

    seen = []  # what status said instead, for the failure's message

    def canary_named():
        status = status_of(objects, namespace, "placed")
        message = ready_condition(status).get("message") or ""
        if "canary iris-b: waiting for the canary's pods: pod" in message:
            return status
        if not seen or seen[-1] != message:
            seen.append(message)
        return None

    status = wait_for(
        canary_named, timeout=120, what=lambda: f"the canary's unschedulable pod named; saw {seen}"
    )
    message = ready_condition(status)["message"]
    assert message.startswith("iris-a serves; canary iris-b: waiting for the canary's pods: ")
    assert "pod placed-canary-" in message and "cannot be scheduled: 0/" in message
    assert status["phase"] == "Progressing" and status["stable"]["readyReplicas"] == 1
    assert status["analysis"]["message"].startswith("waiting for the canary's pods: pod")


def test_serves_stable_with_tracks_services_and_security(
    operator, objects, namespace, models, kube_api, mlflow_server
):
    model, versions = models
    objects.create(namespace, service("iris", "iris-a", replicas=2))
    status = wait_phase(objects, namespace, "iris", "Ready")
    assert status["servingModelVersion"] == "iris-a"
    assert status["stable"] == {"modelVersion": "iris-a", "replicas": 2, "readyReplicas": 2}
    assert status["url"] == f"http://iris.{namespace}.svc.cluster.local"
    # A new service says what it serves through its conditions' Events; the
    # "serves as stable" Event is for a change of the stable model.
    messages = [message for _, _, message in events_of(kube_api, namespace, "iris")]
    assert any("iris-a serves with 2/2 ready replicas" in m for m in messages), messages
    assert not [m for m in messages if "serves as stable" in m]

    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    owner = objects.get(namespace, "InferenceService", "iris")["metadata"]["uid"]
    stable = apps.read_namespaced_deployment("iris-stable", namespace)
    assert stable.metadata.owner_references[0].uid == owner
    assert stable.spec.strategy.rolling_update.max_unavailable == 0
    env = env_of(stable)
    assert env["FLYWHEEL_MODEL_URI"] == f"models:/{model}/{versions['iris-a']['registryVersion']}"
    assert env["FLYWHEEL_TRACK"] == "stable"
    pod_spec = stable.spec.template.spec
    assert pod_spec.security_context.run_as_non_root is True
    assert pod_spec.containers[0].security_context.allow_privilege_escalation is False
    assert pod_spec.containers[0].readiness_probe.http_get.path == "/v2/health/ready"
    umbrella = core.read_namespaced_service("iris", namespace)
    assert umbrella.spec.selector == {f"{GROUP}/inferenceservice": "iris"}
    track = core.read_namespaced_service("iris-stable", namespace)
    assert track.spec.selector[f"{GROUP}/track"] == "stable"
    assert (
        mlflow_server.client().get_model_version_by_alias(model, "production").version
        == (versions["iris-a"]["registryVersion"])
    )

    # Real requests through the Service's endpoints are answered by the model.
    with Traffic(kube_api, namespace, "iris") as traffic:
        wait_for(lambda: traffic.codes[200] >= 20, timeout=60, what="20 answers")
    assert set(traffic.codes) == {200}, traffic.codes

    # Changing spec.stable rolls the stable Deployment, never below 2 ready.
    objects.patch(
        namespace, "InferenceService", "iris", {"spec": {"stable": {"modelVersion": "iris-b"}}}
    )
    lowest = 2

    def rolled():
        nonlocal lowest
        deployment = apps.read_namespaced_deployment("iris-stable", namespace)
        lowest = min(lowest, deployment.status.ready_replicas or 0)
        status = status_of(objects, namespace, "iris")
        done = (
            env_of(deployment)["FLYWHEEL_MODEL_VERSION"] == "iris-b"
            and status.get("phase") == "Ready"
        )
        return status if done and status["stable"]["modelVersion"] == "iris-b" else None

    wait_for(rolled, timeout=180, every=0.5, what="the stable rollout to iris-b")
    assert lowest >= 2
    serving = wait_for(
        lambda: [e for e in events_of(kube_api, namespace, "iris") if "as stable" in e[2]],
        timeout=30,
        what="the Serving Event",
    )
    assert serving == [("Normal", "Serving", "iris-b serves as stable (was iris-a)")]


def test_healthy_canary_moves_step_by_step_and_is_promoted(
    operator, objects, namespace, models, kube_api, mlflow_server, gateway_api
):
    model, versions = models
    canary = {"modelVersion": "iris-b", "analysis": fast_analysis(stepPercent=25, maxPercent=50)}
    traffic_spec = {"router": "gateway-api", "gatewayRef": {"name": "public"}}
    objects.create(namespace, service("iris", "iris-a", canary, traffic=traffic_spec))
    custom = client.CustomObjectsApi(kube_api)
    seen = []

    def promoted():
        try:
            route = custom.get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", namespace, "httproutes", "iris"
            )
            weights = tuple(ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"])
            if not seen or seen[-1] != weights:
                seen.append(weights)
        except client.ApiException:
            pass
        status = status_of(objects, namespace, "iris")
        return status if status.get("servingModelVersion") == "iris-b" else None

    with Traffic(kube_api, namespace, "iris", router="gateway-api"):
        status = wait_for(promoted, timeout=300, every=0.5, what="the canary's promotion")
    assert (75, 25) in seen and (50, 50) in seen, seen
    assert seen.index((75, 25)) < seen.index((50, 50))
    verdict = status["analysis"]["history"][-1]
    assert (verdict["modelVersion"], verdict["verdict"], verdict["replaced"]) == (
        "iris-b",
        "Promoted",
        "iris-a",
    )
    assert "promoting" in verdict["reason"]

    status = wait_phase(objects, namespace, "iris", "Ready", reason="Promoted")
    assert "set spec.stable.modelVersion to iris-b" in ready_condition(status)["message"]
    assert status["traffic"] == {"stable": 100, "canary": 0}
    apps = client.AppsV1Api(kube_api)
    assert (
        env_of(apps.read_namespaced_deployment("iris-stable", namespace))["FLYWHEEL_MODEL_VERSION"]
        == "iris-b"
    )
    wait_for(
        lambda: (
            not apps.list_namespaced_deployment(
                namespace, field_selector="metadata.name=iris-canary"
            ).items
        ),
        timeout=60,
        what="the canary Deployment to go",
    )
    alias = mlflow_server.client().get_model_version_by_alias(model, "production")
    assert alias.version == versions["iris-b"]["registryVersion"]
    reasons = [reason for _, reason, _ in events_of(kube_api, namespace, "iris")]
    assert "CanaryAdvanced" in reasons and "Promoted" in reasons

    # The GitOps commit the status asked for changes nothing that serves.
    objects.patch(
        namespace,
        "InferenceService",
        "iris",
        {"spec": {"stable": {"modelVersion": "iris-b"}, "canary": None}},
    )
    status = wait_phase(objects, namespace, "iris", "Ready", reason="Serving")
    assert status["servingModelVersion"] == "iris-b"


def test_failing_canary_is_rolled_back_without_a_person(
    operator, objects, namespace, models, kube_api, mlflow_server
):
    model, versions = models
    canary = {"modelVersion": "iris-broken", "analysis": fast_analysis()}
    objects.create(namespace, service("iris", "iris-a", canary))
    with Traffic(kube_api, namespace, "iris") as traffic:
        status = wait_phase(objects, namespace, "iris", "Ready", reason="RolledBack", timeout=300)
    assert traffic.codes[500] > 0 and traffic.codes[200] > 0, traffic.codes
    verdict = status["analysis"]["history"][-1]
    assert (verdict["modelVersion"], verdict["verdict"]) == ("iris-broken", "RolledBack")
    assert "error rate" in verdict["reason"] and "maxErrorRate" in verdict["reason"]
    assert status["servingModelVersion"] == "iris-a"
    apps = client.AppsV1Api(kube_api)
    wait_for(
        lambda: (
            not apps.list_namespaced_deployment(
                namespace, field_selector="metadata.name=iris-canary"
            ).items
        ),
        timeout=60,
        what="the canary Deployment to go",
    )
    assert (
        env_of(apps.read_namespaced_deployment("iris-stable", namespace))["FLYWHEEL_MODEL_VERSION"]
        == "iris-a"
    )
    alias = mlflow_server.client().get_model_version_by_alias(model, "production")
    assert alias.version == versions["iris-a"]["registryVersion"]
    warnings = [
        (reason, message)
        for kind, reason, message in events_of(kube_api, namespace, "iris")
        if kind == "Warning"
    ]
    assert any(reason == "RolledBack" and "iris-broken" in message for reason, message in warnings)


def test_autoscaling_gives_each_track_an_hpa(operator, objects, namespace, models, kube_api):
    autoscaling = {"minReplicas": 1, "maxReplicas": 3, "targetCpuUtilization": 60}
    objects.create(namespace, service("iris", "iris-a", autoscaling=autoscaling))
    wait_phase(objects, namespace, "iris", "Ready")
    hpa = client.AutoscalingV2Api(kube_api).read_namespaced_horizontal_pod_autoscaler(
        "iris-stable", namespace
    )
    assert hpa.spec.scale_target_ref.name == "iris-stable"
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 3)
    assert hpa.spec.metrics[0].resource.target.average_utilization == 60
    # The Deployment's replica count is the HPA's to set: the operator leaves it alone.
    apps = client.AppsV1Api(kube_api)
    apps.patch_namespaced_deployment_scale("iris-stable", namespace, {"spec": {"replicas": 2}})
    wait_for(
        lambda: (
            (status_of(objects, namespace, "iris").get("stable") or {}).get("readyReplicas") == 2
        ),
        timeout=120,
        what="two ready stable replicas",
    )
    assert apps.read_namespaced_deployment("iris-stable", namespace).spec.replicas == 2


# What the operator writes for an InferenceService; the status subresources
# are the controllers' (a Deployment's replica counts), apart from our own.
# Not Events: the HPA controller posts its own (no metrics server here).
OPERATOR_WRITES = {
    ("deployments", ""),
    ("services", ""),
    ("horizontalpodautoscalers", ""),
    ("inferenceservices", ""),
    ("inferenceservices", "status"),
}


def test_a_converged_service_sends_no_writes(
    operator, objects, namespace, models, kube_api, control_plane
):
    """Every resync re-checks the Deployment, the Services and the HPA, but once
    they match, it only reads them: no server-side apply that changes nothing.
    The Deployment and the Services it reads from its own watches (the
    operator watches them to notice their changes anyway): no GET of them."""
    autoscaling = {"minReplicas": 1, "maxReplicas": 3, "targetCpuUtilization": 60}
    objects.create(namespace, service("iris", "iris-a", autoscaling=autoscaling))
    wait_phase(objects, namespace, "iris", "Ready")
    # Earlier tests' namespaces are deleted in the background, and the
    # operator writes while their objects go; count only after they have.
    core = client.CoreV1Api(kube_api)
    wait_for(
        lambda: not [n for n in core.list_namespace().items if n.status.phase == "Terminating"],
        timeout=300,
        every=2,
        what="earlier tests' namespaces to be gone",
    )
    time.sleep(2 * RESYNC_SECONDS)
    before = apiserver_requests(control_plane)
    time.sleep(5 * RESYNC_SECONDS)  # five resyncs of every child
    after = apiserver_requests(control_plane)
    written = {
        key: after[key] - before[key]
        for key in after
        if key[:2] in OPERATOR_WRITES and key[2] in WRITE_VERBS and after[key] != before[key]
    }
    assert written == {}, written

    def gets(resource: str) -> float:
        # The object itself: the HPA controller reads deployments/scale.
        return sum(after[k] - before[k] for k in after if k == (resource, "", "GET"))

    assert gets("horizontalpodautoscalers") > 0, "the HPA was not looked at: no resync ran"
    assert (gets("deployments"), gets("services")) == (0, 0)
    assert status_of(objects, namespace, "iris")["phase"] == "Ready"
