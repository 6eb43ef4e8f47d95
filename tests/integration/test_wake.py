"""Each step of the loop is taken when the step before it finishes, not at the
next resync; a canary is checked when its interval ends.

The session's operator resyncs every 2 s, which would hide a missing wake-up.
Here an operator with a one-hour resync runs instead, and the whole chain is
created at once, every object waiting on the one before: Dataset (snapshot
Job) -> TrainingRun (training Job) -> ModelVersion -> InferenceService (its
Deployment's pods). Only the wake-ups of controllers/wake.py can carry it
through: without them this test times out.
"""

from __future__ import annotations

import re
import time
import urllib.request

import pytest
from kube_helpers import wait_for
from operator_helpers import operator_env, operator_process
from sample_data import upload_sample_data
from serving_helpers import Traffic, fast_analysis, log_sklearn_model, model_version
from sklearn.linear_model import LogisticRegression
from training_helpers import iris_dataset, iris_run, ready_condition

from flywheel.controllers.wake import REQUESTED_AT

pytestmark = pytest.mark.integration
# Longer than the test: a resync never comes to its rescue.
SLOW_RESYNC = 3600


@pytest.fixture
def slow_operator(operator, control_plane, object_store, mlflow_server, tmp_path):
    """The session's operator stands aside for one with a one-hour resync."""
    operator.stop()
    env = operator_env(control_plane, object_store, mlflow_server, resync=SLOW_RESYNC)
    slow = operator_process(env, tmp_path / "operator.log")
    slow.start(timeout=120)
    try:
        yield slow
    finally:
        slow.stop()
        operator.start(timeout=120)


def status(objects, namespace, kind, name):
    return objects.get(namespace, kind, name).get("status") or {}


def reason(objects, namespace, kind, name):
    return ready_condition(status(objects, namespace, kind, name)).get("reason")


@pytest.mark.timeout(900)
def test_the_loop_moves_on_watch_events_alone(
    slow_operator, objects, namespace, object_store, artifact_secret
):
    upload_sample_data(object_store)
    model = f"wake-{namespace}"
    created = time.monotonic()
    # Newest first, so that each one starts out waiting on one that is missing.
    objects.create(
        namespace,
        {
            "kind": "InferenceService",
            "metadata": {"name": "iris"},
            "spec": {"stable": {"modelVersion": "iris-served"}},
        },
    )
    wait_for(
        lambda: reason(objects, namespace, "InferenceService", "iris") == "ModelVersionNotFound",
        timeout=60,
        what="the InferenceService to wait on its ModelVersion",
    )
    objects.create(
        namespace,
        {
            "kind": "ModelVersion",
            "metadata": {"name": "iris-served"},
            "spec": {"modelName": model, "source": {"trainingRun": "iris-rf"}},
        },
    )
    gates = [{"metric": "accuracy", "op": ">=", "threshold": 0.8}]
    objects.create(namespace, iris_run("iris-rf", model, gates))
    # The ModelVersion's arrival woke the InferenceService: it now waits on
    # the model being servable, no longer on a missing object.
    wait_for(
        lambda: reason(objects, namespace, "InferenceService", "iris") == "ModelNotServable",
        timeout=60,
        what="the InferenceService to notice its ModelVersion",
    )
    objects.create(namespace, iris_dataset())

    def ready():
        current = status(objects, namespace, "InferenceService", "iris")
        return current if current.get("phase") == "Ready" else None

    try:
        final = wait_for(ready, timeout=600, every=1, what="the InferenceService Ready")
    except BaseException:
        for kind, name in [
            ("Dataset", "iris"),
            ("TrainingRun", "iris-rf"),
            ("ModelVersion", "iris-served"),
            ("InferenceService", "iris"),
        ]:
            print(kind, name, status(objects, namespace, kind, name))
        raise
    took = time.monotonic() - created
    print(f"\nDataset -> TrainingRun -> ModelVersion -> InferenceService Ready in {took:.0f} s")
    assert final["servingModelVersion"] == "iris-served"
    assert status(objects, namespace, "Dataset", "iris")["phase"] == "Ready"
    assert status(objects, namespace, "TrainingRun", "iris-rf")["phase"] == "Succeeded"
    assert status(objects, namespace, "ModelVersion", "iris-served")["phase"] == "Servable"

    # A person can ask for a reconcile the same way (README, "Operations").
    before = reconciles(slow_operator, "InferenceService")
    stamp = {"metadata": {"annotations": {REQUESTED_AT: "2026-12-03T21:00:00Z"}}}
    objects.patch(namespace, "InferenceService", "iris", stamp)
    wait_for(
        lambda: reconciles(slow_operator, "InferenceService") > before,
        timeout=30,
        what="a reconcile asked for by annotation",
    )


def reconciles(operator, kind: str) -> float:
    with urllib.request.urlopen(operator.metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    found = re.findall(rf'flywheel_reconcile_total\{{kind="{kind}",result="\w+"\}} (\S+)', text)
    return sum(float(n) for n in found)


@pytest.mark.timeout(600)
def test_a_canary_is_checked_when_its_interval_ends(
    slow_operator, objects, namespace, mlflow_server, artifact_secret, kube_api
):
    """Nothing changes while a canary is measured: no watch event would wake
    the InferenceService, and the resync is an hour away. The operator sets
    itself an alarm for each check's due time."""
    model = f"canary-{namespace}"
    for name, estimator in (
        ("iris-a", LogisticRegression(max_iter=300)),
        ("iris-b", LogisticRegression(C=0.05, max_iter=300)),
    ):
        run_id, uri = log_sklearn_model(mlflow_server.tracking_uri, namespace, estimator)
        objects.create(namespace, model_version(name, model, run_id, uri))
    objects.create(
        namespace,
        {
            "kind": "InferenceService",
            "metadata": {"name": "iris"},
            "spec": {
                "stable": {"modelVersion": "iris-a"},
                "canary": {"modelVersion": "iris-b", "analysis": fast_analysis()},
            },
        },
    )

    def promoted():
        current = status(objects, namespace, "InferenceService", "iris")
        return current if current.get("servingModelVersion") == "iris-b" else None

    try:
        with Traffic(kube_api, namespace, "iris"):
            final = wait_for(promoted, timeout=420, every=0.5, what="the canary's promotion")
    except BaseException:
        print("InferenceService status:", status(objects, namespace, "InferenceService", "iris"))
        raise
    verdict = final["analysis"]["history"][-1]
    assert (verdict["modelVersion"], verdict["verdict"]) == ("iris-b", "Promoted")
