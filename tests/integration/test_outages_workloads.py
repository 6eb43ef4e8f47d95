"""The S3-compatible store and MLflow down while the workload pods run: the
dataset snapshot Job, the training Job and the drift check. What a user sees
meanwhile is a Ready condition naming the store (its URL, the object) and no
traceback; the pods wait for the store inside (storage.with_retries, about
half a minute), and past that fail with a named reason (exit 10) that the
Job's own backoff retries. Once the store is back everything completes, once.

The services are stopped for real (connections refused) and started again on
the same port with the same data (tests/services: `outage()`). The outage
lasts FLYWHEEL_OUTAGE_SECONDS (20 s in `make test`, 60 s in `make soak`), and
at least until the user can see it.
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import UTC, datetime

import mlflow.pyfunc
import pandas as pd
import pytest
from kube_helpers import wait_for
from kubernetes import client
from sample_data import IRIS_COLUMNS, SAMPLE_BUCKET, SAMPLE_KEY, upload_sample_data
from serving_helpers import Traffic, shifted_rows
from training_helpers import (
    iris_dataset,
    iris_run,
    wait_dataset_ready,
    wait_finished,
    wait_model_phase,
    wait_training_pod_running,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

OUTAGE_SECONDS = float(os.environ.get("FLYWHEEL_OUTAGE_SECONDS", "20"))
# Pod start-up, the pod's own waiting (about 30 s) and its report: time enough
# for a failed attempt to show.
NAMED_WITHIN_SECONDS = 240


def not_ready_because(objects, namespace, kind, name, reason) -> dict | None:
    ready = objects.condition(namespace, kind, name, "Ready") or {}
    return ready if ready.get("reason") == reason else None


def exit_codes(kube_api, namespace: str, job: str) -> list[int]:
    """The exit code of every pod of the Job that has ended, oldest first."""
    pods = (
        client.CoreV1Api(kube_api)
        .list_namespaced_pod(namespace, label_selector=f"job-name={job}")
        .items
    )
    codes = []
    for pod in sorted(pods, key=lambda p: p.metadata.creation_timestamp):
        for status in pod.status.container_statuses or []:
            if status.state.terminated:
                codes.append(status.state.terminated.exit_code)
    return codes


def keys_under(object_store, bucket: str, prefix: str) -> list[str]:
    pages = object_store.client().get_paginator("list_objects_v2")
    pages = pages.paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_store_down_as_a_dataset_snapshots_is_named_and_versioned_once(
    operator, objects, namespace, object_store, artifact_secret, kube_api
):
    upload_sample_data(object_store)
    source = f"s3://{SAMPLE_BUCKET}/{SAMPLE_KEY.split('/')[0]}/"
    with object_store.outage():
        began = time.monotonic()
        objects.create(namespace, iris_dataset(source))
        named = wait_for(
            lambda: not_ready_because(objects, namespace, "Dataset", "iris", "SourceUnreachable"),
            timeout=NAMED_WITHIN_SECONDS,
            what="Ready=False SourceUnreachable",
        )
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - began)))
        down_for = time.monotonic() - began
    # The user reads which store, which data, and that it is being retried.
    assert named["status"] == "False"
    message = named["message"]
    assert source in message and object_store.endpoint_url in message, message
    assert "retries it" in message and "Traceback" not in message, message

    status = wait_dataset_ready(objects, namespace, timeout=300)
    job = status["snapshot"]["jobName"]
    codes = exit_codes(kube_api, namespace, job)
    print(f"store down {down_for:.0f} s as a Dataset snapshotted: pods exited {codes}")
    assert status["rows"] == 150 and len(status["version"]) == 64
    # One Job carried it (its pods retried); the failed pods said "unreachable".
    assert status["snapshot"]["sequence"] == 1, status["snapshot"]
    assert codes[:-1] and set(codes[:-1]) == {10} and codes[-1] == 0, codes
    ready = objects.condition(namespace, "Dataset", "iris", "Ready")
    assert ready["status"] == "True" and ready["reason"] == "Validated", ready
    # One profile, where status says.
    bucket, key = status["profileUri"].removeprefix("s3://").split("/", 1)
    assert keys_under(object_store, bucket, key.rsplit("/", 1)[0] + "/") == [key]


def test_store_down_as_training_starts_is_named_and_registers_once(
    operator, objects, namespace, iris, object_store, mlflow_server, kube_api
):
    model = f"store-outage-{namespace}"
    with object_store.outage():
        began = time.monotonic()
        objects.create(namespace, iris_run("iris-rf", model, []))
        named = wait_for(
            lambda: not_ready_because(
                objects, namespace, "TrainingRun", "iris-rf", "SourceUnreachable"
            ),
            timeout=NAMED_WITHIN_SECONDS,
            what="Ready=False SourceUnreachable",
        )
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - began)))
        down_for = time.monotonic() - began
    message = named["message"]
    assert f"s3://{SAMPLE_BUCKET}/" in message and object_store.endpoint_url in message, message
    assert "did not answer" in message and "retries it" in message, message
    assert "Traceback" not in message, message

    status = wait_finished(objects, namespace, "iris-rf", timeout=420)
    codes = exit_codes(kube_api, namespace, status["jobName"])
    print(f"store down {down_for:.0f} s as training started: pods exited {codes}")
    assert status["phase"] == "Succeeded", status
    assert codes[:-1] and set(codes[:-1]) == {10} and codes[-1] == 0, codes
    assert_registered_once(objects, namespace, status, model, mlflow_server)


def test_store_down_while_training_registers_one_version(
    operator, objects, namespace, iris, object_store, mlflow_server, kube_api
):
    model = f"store-outage-{namespace}"
    objects.create(namespace, iris_run("iris-rf", model, []))
    wait_training_pod_running(kube_api, namespace)
    with object_store.outage():
        time.sleep(OUTAGE_SECONDS)

    status = wait_finished(objects, namespace, "iris-rf", timeout=420)
    codes = exit_codes(kube_api, namespace, status["jobName"])
    print(f"store down {OUTAGE_SECONDS:.0f} s during training: pods exited {codes}")
    assert status["phase"] == "Succeeded", status
    assert_registered_once(objects, namespace, status, model, mlflow_server)


def assert_registered_once(objects, namespace, status, model, mlflow_server) -> None:
    """Metrics, one MLflow run, one registry version, and a model that loads."""
    assert {"accuracy", "f1_macro"} <= set(status["metrics"]), status
    model_version = wait_model_phase(
        objects, namespace, status["modelVersion"], "Servable", timeout=180
    )
    versions = mlflow_server.client().search_model_versions(f"name = '{model}'")
    assert [v.version for v in versions] == [model_version["registryVersion"]]
    experiment = mlflow_server.client().get_experiment_by_name(f"{namespace}/iris")
    runs = mlflow_server.client().search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    # The model the registry points at is whole: it loads and predicts.
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{model}/{model_version['registryVersion']}")
    finally:
        mlflow.set_tracking_uri(None)
    row = pd.DataFrame([[5.1, 3.5, 1.4, 0.2]], columns=IRIS_COLUMNS[:4])
    assert list(loaded.predict(row)) == ["setosa"]


# --- the drift check ------------------------------------------------------


def monitored_service(stable: str) -> dict:
    """A check every minute; a retrain on drift, not deployed (the loop's far
    end is test_closed_loop's)."""
    drift = {"schedule": "* * * * *", "window": "1h", "minRows": 50, "threshold": 0.5}
    return {
        "kind": "InferenceService",
        "metadata": {"name": "iris"},
        "spec": {
            "stable": {"modelVersion": stable},
            "logging": {"sampleRate": 1.0, "flushInterval": "3s"},
            "monitoring": {"drift": drift},
            "retrain": {"cooldown": "1h", "autoDeploy": "none"},
        },
    }


def drift_events(kube_api, namespace: str) -> list[tuple[str, str]]:
    items = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
    ordered = sorted(items, key=lambda e: e.metadata.creation_timestamp)
    return [(e.reason, e.message) for e in ordered if e.involved_object.name == "iris"]


def retrain_runs(objects, namespace: str) -> list[dict]:
    return objects.api.list_namespaced_custom_object(
        "mlops.flywheel.dev", "v1alpha1", namespace, "trainingruns",
        label_selector="mlops.flywheel.dev/retrain-of",
    )["items"]  # fmt: skip


def drift_checks_exit_codes(kube_api, namespace: str) -> dict[str, list[int]]:
    jobs = (
        client.BatchV1Api(kube_api)
        .list_namespaced_job(namespace, label_selector="app.kubernetes.io/component=drift-check")
        .items
    )
    return {j.metadata.name: exit_codes(kube_api, namespace, j.metadata.name) for j in jobs}


def detect_drift_through(outage, objects, namespace, iris, kube_api, mlflow_server):
    """Serve a model, send shifted traffic, take `outage` down while the first
    drift check's pod runs; return (InferenceService status once the retrain
    finished, the retraining run, seconds down)."""
    model = f"drift-outage-{namespace}"
    objects.create(namespace, iris_run("iris-rf", model, []))
    first = wait_finished(objects, namespace, "iris-rf", timeout=300)["modelVersion"]
    wait_model_phase(objects, namespace, first, "Servable", timeout=120)
    objects.create(namespace, monitored_service(first))
    core = client.CoreV1Api(kube_api)

    def status():
        return objects.get(namespace, "InferenceService", "iris").get("status") or {}

    def check_running():
        pods = core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=drift-check"
        ).items
        return any(p.status.phase == "Running" for p in pods)

    def retrained():
        runs = retrain_runs(objects, namespace)
        done = [r for r in runs if (r.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
        return done[0] if done else None

    try:
        with Traffic(kube_api, namespace, "iris", rows=shifted_rows()):
            wait_for(check_running, timeout=240, every=0.5, what="a drift check's pod to run")
            began = time.monotonic()
            with outage():
                time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - began)))
            down_for = time.monotonic() - began
            wait_for(
                lambda: (status().get("drift") or {}).get("result") == "Drift",
                timeout=360,
                what="a drift detection",
            )
        run = wait_for(retrained, timeout=420, every=1, what="the retraining run to finish")
    except BaseException:
        print("InferenceService status:", status())
        print("events:", drift_events(kube_api, namespace))
        print("drift check pods exited:", drift_checks_exit_codes(kube_api, namespace))
        raise
    return status(), run, down_for, model


def assert_one_retrain_for_one_detection(objects, namespace, kube_api, final, run, model, mlflow):
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert [r["metadata"]["name"] for r in retrain_runs(objects, namespace)] == [
        run["metadata"]["name"]
    ]
    # One retraining, started by the check that detected drift; later
    # detections fell in the cooldown (status.retrain.lastDetection moves on).
    started = [m for reason, m in drift_events(kube_api, namespace) if reason == "RetrainStarted"]
    detection = run["metadata"]["annotations"]["mlops.flywheel.dev/drift-check"]
    assert started == [f"drift check {detection}: TrainingRun {run['metadata']['name']} "
                       "retrains iris-rf"], started  # fmt: skip
    assert final["retrain"]["triggered"] == 1, final["retrain"]
    # Two registry versions: the first model and the retrained one, once each.
    retrained = wait_model_phase(
        objects, namespace, run["status"]["modelVersion"], "Servable", timeout=180
    )
    versions = sorted(int(v.version) for v in mlflow.client().search_model_versions(
        f"name = '{model}'"
    ))  # fmt: skip
    assert versions == [1, 2] and int(retrained["registryVersion"]) == 2, versions


def test_store_down_during_a_drift_check_retrains_once_and_keeps_the_report(
    operator, objects, namespace, iris, kube_api, mlflow_server, object_store
):
    final, run, down_for, model = detect_drift_through(
        object_store.outage, objects, namespace, iris, kube_api, mlflow_server
    )
    codes = drift_checks_exit_codes(kube_api, namespace)
    print(f"store down {down_for:.0f} s during a drift check: check pods exited {codes}")
    # A check the outage failed said which store, with its URL, and why it may pass again.
    failed = [m for reason, m in drift_events(kube_api, namespace) if reason == "DriftCheckFailed"]
    for message in failed:
        assert "Unreachable" in message or "ReportUnwritable" in message, message
        assert object_store.endpoint_url in message and "Traceback" not in message, message
    for job_codes in codes.values():
        assert set(job_codes) <= {0, 41, 44, 49}, codes  # only the retryable reasons
    # The detection's report is in the store, where status says.
    drift = final["drift"]
    bucket, report = drift["reportUri"].removeprefix("s3://").split("/", 1)
    folder = report.rsplit("/", 1)[0]
    stored = keys_under(object_store, bucket, folder + "/")
    assert stored == [f"{folder}/report.html", f"{folder}/result.json"], stored
    assert_one_retrain_for_one_detection(
        objects, namespace, kube_api, final, run, model, mlflow_server
    )


def test_mlflow_down_during_a_drift_check_retrains_once_and_says_what_is_missing(
    operator, objects, namespace, iris, kube_api, mlflow_server
):
    batch = client.BatchV1Api(kube_api)
    seen: dict[str, str] = {}

    def a_check_created_since(began: datetime) -> str | None:
        jobs = batch.list_namespaced_job(
            namespace, label_selector="app.kubernetes.io/component=drift-check"
        ).items
        later = [j for j in jobs if j.metadata.creation_timestamp > began]
        done = [j for j in later if j.status.completion_time or j.status.failed]
        return done[0].metadata.name if done else None

    def read_by_the_operator(check: str) -> str | None:
        status = objects.get(namespace, "InferenceService", "iris").get("status") or {}
        drift = status.get("drift") or {}
        return drift.get("message") if drift.get("job") == check else None

    @contextlib.contextmanager
    def down_for_a_whole_check():
        """MLflow down from before a check's Job exists until the operator read it."""
        with mlflow_server.outage():
            began = datetime.now(UTC).replace(microsecond=0)
            check = wait_for(lambda: a_check_created_since(began), timeout=240, every=1,
                             what="a drift check run with MLflow down")  # fmt: skip
            seen["check"] = check
            seen["message"] = wait_for(lambda: read_by_the_operator(check), timeout=120,
                                       what=f"status.drift of {check}")  # fmt: skip
            yield

    final, run, down_for, model = detect_drift_through(
        down_for_a_whole_check, objects, namespace, iris, kube_api, mlflow_server
    )
    print(f"MLflow down {down_for:.0f} s over check {seen['check']}: {seen['message']}")
    # The check needs no MLflow: it ended with a verdict, which says what MLflow missed.
    assert exit_codes(kube_api, namespace, seen["check"]) == [0]
    assert "not recorded in MLflow" in seen["message"], seen
    assert mlflow_server.tracking_uri in seen["message"] and "Traceback" not in seen["message"]
    assert_one_retrain_for_one_detection(
        objects, namespace, kube_api, final, run, model, mlflow_server
    )
