"""The loop, closed and unattended: a model trained by a TrainingRun serves;
the traffic it gets shifts; the drift CronJob's check (real Evidently, on the
inference logs the model servers wrote to the object store) flags it; the
operator retrains, the new model passes its gates, becomes the canary, passes
its analysis and is promoted. No step below is done by the test except
sending the traffic.
"""

from __future__ import annotations

import pytest
from kube_helpers import wait_for
from kubernetes import client
from serving_helpers import Traffic, fast_analysis, shifted_rows
from training_helpers import iris_run, wait_finished, wait_model_phase

pytestmark = pytest.mark.integration


def loop_service(stable: str) -> dict:
    return {
        "kind": "InferenceService",
        "metadata": {"name": "iris"},
        "spec": {
            "stable": {"modelVersion": stable},
            "logging": {"sampleRate": 1.0, "flushInterval": "3s"},
            "monitoring": {
                "drift": {"schedule": "* * * * *", "window": "1h", "minRows": 50, "threshold": 0.5}
            },
            "retrain": {"cooldown": "1h", "autoDeploy": "canary", "analysis": fast_analysis()},
        },
    }


def events_of(kube_api, namespace, name):
    items = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
    return [e.reason for e in sorted(items, key=lambda e: e.metadata.creation_timestamp)
            if e.involved_object.name == name]  # fmt: skip


def test_drift_retrains_and_the_retrained_model_is_promoted(
    operator, objects, namespace, iris, kube_api, mlflow_server
):
    model = f"loop-{namespace}"
    objects.create(
        namespace,
        iris_run("iris-rf", model, [{"metric": "accuracy", "op": ">=", "threshold": 0.8}]),
    )
    first = wait_finished(objects, namespace, "iris-rf")["modelVersion"]
    wait_model_phase(objects, namespace, first, "Servable")
    objects.create(namespace, loop_service(first))

    def status():
        return objects.get(namespace, "InferenceService", "iris").get("status") or {}

    def promoted():
        current = status()
        served = current.get("servingModelVersion")
        return current if served and served != first else None

    try:
        with Traffic(kube_api, namespace, "iris", rows=shifted_rows()) as traffic:
            detected = wait_for(
                lambda: (status().get("drift") or {}).get("result") == "Drift" and status(),
                timeout=240,
                what="a drift detection",
            )
            final = wait_for(promoted, timeout=420, every=1, what="the retrained model's promotion")
    except BaseException:
        print("InferenceService status:", status())
        print("events:", events_of(kube_api, namespace, "iris"))
        raise
    assert traffic.codes[200] > 0 and not traffic.codes[500], traffic.codes

    drift = detected["drift"]
    drifted = {f["name"] for f in drift["features"] if f["drifted"]}
    assert {"petal_length", "petal_width"} <= drifted, drift
    assert drift["share"] >= 0.5 and drift["reportUri"].startswith("s3://")
    assert drift["consecutiveDetections"] >= 1

    retrain = final["retrain"]
    run_name = retrain["last"]
    run = objects.get(namespace, "TrainingRun", run_name)
    assert run["metadata"]["labels"]["mlops.flywheel.dev/retrain-of"] == "iris-rf"
    # The run names the check that started it: the first detection. (A later
    # check can flag the same traffic before the promotion; lastDetection
    # then names that one, whose decision was the cooldown.)
    assert run["metadata"]["annotations"]["mlops.flywheel.dev/drift-check"] == drift["job"]
    assert retrain["lastDetection"] >= drift["job"]
    assert run["status"]["phase"] == "Succeeded"
    retrained = run["status"]["modelVersion"]
    assert final["servingModelVersion"] == retrained == retrain["candidate"]
    verdict = final["analysis"]["history"][-1]
    assert (verdict["modelVersion"], verdict["verdict"], verdict["replaced"]) == (
        retrained,
        "Promoted",
        first,
    )
    alias = mlflow_server.client().get_model_version_by_alias(model, "production")
    promoted_version = objects.get(namespace, "ModelVersion", retrained)["status"]
    assert alias.version == promoted_version["registryVersion"]

    story = events_of(kube_api, namespace, "iris")
    for step in ("DriftDetected", "RetrainStarted", "RetrainedModel", "CanaryStarted", "Promoted"):
        assert step in story, story
    # Events carry whole seconds: the detection and the retrain it starts may tie.
    assert (
        max(story.index("DriftDetected"), story.index("RetrainStarted"))
        < (story.index("RetrainedModel"))
        < story.index("Promoted")
    )

    # One detection, one retrain: later checks fall in the cooldown.
    runs = objects.api.list_namespaced_custom_object(
        "mlops.flywheel.dev",
        "v1alpha1",
        namespace,
        "trainingruns",
        label_selector="mlops.flywheel.dev/retrain-of",
    )["items"]
    assert [r["metadata"]["name"] for r in runs] == [run_name]


def test_a_retrained_model_that_fails_its_gate_is_never_deployed(
    operator, objects, namespace, iris, kube_api
):
    # Same data, same seed: the retrained model cannot beat the one serving.
    run = iris_run("iris-rf", f"gated-{namespace}", [])
    run["spec"]["register"]["mustBeatProduction"] = "accuracy"
    objects.create(namespace, run)
    first = wait_finished(objects, namespace, "iris-rf")["modelVersion"]
    wait_model_phase(objects, namespace, first, "Servable")
    objects.create(namespace, loop_service(first))

    def gated():
        retrain = (objects.get(namespace, "InferenceService", "iris").get("status") or {}).get(
            "retrain"
        ) or {}
        return retrain if retrain.get("last") and not retrain.get("inFlight") else None

    with Traffic(kube_api, namespace, "iris", rows=shifted_rows()):
        retrain = wait_for(gated, timeout=420, every=1, what="the retrain to finish")
    status = objects.get(namespace, "InferenceService", "iris")["status"]
    assert "produced no model (GateFailed)" in retrain["message"]
    assert "candidate" not in retrain
    assert status["servingModelVersion"] == first and not status.get("canary")
    assert not (status.get("analysis") or {}).get("history")
    run = objects.get(namespace, "TrainingRun", retrain["last"])["status"]
    assert "does not beat production" in next(
        c["message"] for c in run["conditions"] if c["type"] == "Ready"
    )
    assert "RetrainGated" in events_of(kube_api, namespace, "iris")
