"""The children of an InferenceService, and which ModelVersion serves as stable."""

from __future__ import annotations

from pathlib import Path

import yaml
from golden import assert_golden

from flywheel.api.inferenceservice import InferenceServiceSpec
from flywheel.builders.serving import (
    ServedModel,
    build_autoscaler,
    build_deployment,
    build_http_route,
    build_service,
    inference_log_uri,
)
from flywheel.controllers.inferenceservices import judged, serving_stable
from flywheel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "inferenceservice.yaml").read_text())
SETTINGS = Settings(
    image="flywheel:test", s3_endpoint="http://s3:7070", mlflow_tracking_uri="http://mlflow:5000"
)
MODEL = ServedModel("iris-v1", "iris", "3")


def body(spec):
    return {
        "apiVersion": "mlops.flywheel.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "team-a", "uid": "u-4"},
        "spec": spec,
    }


def test_stable_deployment_matches_golden():
    spec = InferenceServiceSpec.model_validate(SAMPLE["spec"])
    deployment = build_deployment(body(SAMPLE["spec"]), spec, "stable", MODEL, 2, SETTINGS)
    assert_golden("serving-deployment.yaml", deployment)


def test_deployment_pins_the_model_and_keeps_capacity_while_rolling():
    spec = InferenceServiceSpec.model_validate(SAMPLE["spec"])
    deployment = build_deployment(body(SAMPLE["spec"]), spec, "canary", MODEL, 1, SETTINGS)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLYWHEEL_MODEL_URI"] == "models:/iris/3"
    assert env["FLYWHEEL_MODEL_VERSION"] == "iris-v1" and env["FLYWHEEL_TRACK"] == "canary"
    assert env["FLYWHEEL_INFERENCE_LOG_URI"] == (
        "s3://flywheel-artifacts/inference-logs/team-a/iris/iris-v1"
    )
    secrets = [e for e in container["env"] if "valueFrom" in e]
    assert {e["name"] for e in secrets} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "u-4"


def test_autoscaled_deployment_leaves_replicas_to_the_hpa():
    raw = {"stable": {"modelVersion": "a"}, "autoscaling": {"maxReplicas": 5}}
    spec = InferenceServiceSpec.model_validate(raw)
    assert (
        "replicas" not in build_deployment(body(raw), spec, "stable", MODEL, None, SETTINGS)["spec"]
    )
    hpa = build_autoscaler(body(raw), spec, "stable")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "iris-stable"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 5)


def test_both_tracks_run_where_spec_scheduling_says():
    raw = {
        "stable": {"modelVersion": "a"},
        "scheduling": {
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    }
    spec = InferenceServiceSpec.model_validate(raw)
    for track in ("stable", "canary"):
        pod = build_deployment(body(raw), spec, track, MODEL, 1, SETTINGS)["spec"]["template"][
            "spec"
        ]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert pod["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    # Without it the pods go wherever the scheduler puts them: neither field is set.
    plain = {"stable": {"modelVersion": "a"}}
    pod = build_deployment(
        body(plain), InferenceServiceSpec.model_validate(plain), "stable", MODEL, 1, SETTINGS
    )["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_services_select_one_track_or_both():
    umbrella, canary = build_service(body({}), None), build_service(body({}), "canary")
    assert umbrella["metadata"]["name"] == "iris"
    assert umbrella["spec"]["selector"] == {"mlops.flywheel.dev/inferenceservice": "iris"}
    assert canary["metadata"]["name"] == "iris-canary"
    assert canary["spec"]["selector"]["mlops.flywheel.dev/track"] == "canary"


def test_http_route_carries_exact_weights():
    raw = {
        "stable": {"modelVersion": "a"},
        "traffic": {"router": "gateway-api", "gatewayRef": {"name": "public", "namespace": "gw"}},
    }
    spec = InferenceServiceSpec.model_validate(raw)
    route = build_http_route(body(raw), spec, 70, 30)
    backends = route["spec"]["rules"][0]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in backends] == [
        ("iris-stable", 70),
        ("iris-canary", 30),
    ]
    assert route["spec"]["parentRefs"][0] == {
        "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "gw"
    }  # fmt: skip
    only_stable = build_http_route(body(raw), spec, 100, 0)["spec"]["rules"][0]["backendRefs"]
    assert [b["name"] for b in only_stable] == ["iris-stable"]


def test_inference_logging_off_or_elsewhere():
    off = InferenceServiceSpec.model_validate(
        {"stable": {"modelVersion": "a"}, "logging": {"enabled": False}}
    )
    assert inference_log_uri(off, SETTINGS, "ns", "svc", "a") is None
    elsewhere = InferenceServiceSpec.model_validate(
        {"stable": {"modelVersion": "a"}, "logging": {"destination": "s3://logs/x/"}}
    )
    assert inference_log_uri(elsewhere, SETTINGS, "ns", "svc", "a") == "s3://logs/x/ns/svc/a"


def promoted(model_version, replaced):
    return {"modelVersion": model_version, "verdict": "Promoted", "replaced": replaced}


def test_promoted_canary_serves_until_spec_stable_changes():
    spec = InferenceServiceSpec.model_validate(
        {"stable": {"modelVersion": "a"}, "canary": {"modelVersion": "b"}}
    )
    assert serving_stable(spec, {}) == "a"
    status = {"analysis": {"history": [promoted("b", "a")]}}
    assert serving_stable(spec, status) == "b"  # spec still says a: the promotion holds
    assert judged(status, "b")["verdict"] == "Promoted"
    moved = InferenceServiceSpec.model_validate({"stable": {"modelVersion": "c"}})
    assert serving_stable(moved, status) == "c"  # a new commit wins
    assert (
        judged({"analysis": {"history": [{"modelVersion": "x", "verdict": "RolledBack"}]}}, "b")
        is None
    )


def test_production_alias_waits_for_mlflow_without_stopping_service(monkeypatch):
    from flywheel.controllers import inferenceservices
    from flywheel.controllers.backoff import Backoff

    calls = []
    now = [0.0]
    monkeypatch.setattr(
        inferenceservices, "ALIAS_BACKOFF", Backoff(first=5.0, cap=60.0, clock=lambda: now[0])
    )

    def unreachable(*args):
        calls.append(args)
        raise ConnectionError("Connection refused")

    def move(status, fields, events):
        inferenceservices._move_production_alias("u", status, fields, events, serving, SETTINGS)

    monkeypatch.setattr(inferenceservices.tracking, "move_alias", unreachable)
    serving = {"modelName": "iris", "registryVersion": "4"}
    fields, events = {}, []
    for second in range(10):  # a resync every second while MLflow is down
        now[0] = float(second)
        move({}, fields, events)
    assert "productionAlias" not in fields  # retried on a later resync
    assert len(calls) == 2  # at 0 s and 5 s: backing off, not every resync
    assert events == [
        (
            "Warning",
            "AliasNotMoved",
            "MLflow alias production -> iris/4: Connection refused; retrying with backoff",
        )
    ]  # one Warning for the outage
    monkeypatch.setattr(
        inferenceservices.tracking, "move_alias", lambda *a: calls.append(a) or True
    )
    now[0] = 15.0
    events = []
    move({}, fields, events)
    assert fields["productionAlias"] == "iris/4"
    assert calls[-1] == ("http://mlflow:5000", "iris", "production", "4")
    assert events == [("Normal", "AliasMoved", "MLflow alias production -> iris/4")]
    move({"productionAlias": "iris/4"}, {}, [])
    assert len(calls) == 3  # already there: MLflow is not asked again
    # Another service of the same version found the alias already there: no
    # "moved" Event, and status says where it points.
    monkeypatch.setattr(inferenceservices.tracking, "move_alias", lambda *a: False)
    fields, events = {}, []
    move({}, fields, events)
    assert fields["productionAlias"] == "iris/4" and events == []
