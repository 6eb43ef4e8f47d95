"""Issue #9, property 2: the apiserver and etcd restart under the operator.

200 TrainingRuns are being reconciled (each an MLflow run and a Job) when the
apiserver restarts, then etcd and the apiserver together. Nobody restarts the
operator: it must reconnect by itself, and it must have, because half of the
objects are created only after the first restart and only a live watch tells
it about them. Afterwards every object has converged with exactly one Job and
one MLflow run, and the writes it took are counted from the apiserver's own
request metrics: bounded per object, and none once converged (no hot loop).

The training pods go to kwok's node, which completes them without running
anything: this property is about the API connection, not about training, and
200 real trainings would not fit on the test machine.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter

import pytest
from chaos_helpers import mlflow_runs
from kube_helpers import RESYNC_SECONDS, apiserver_requests, wait_for, writes
from kubernetes import client

from flywheel.api.common import GROUP, VERSION

pytestmark = pytest.mark.integration

OBJECTS = 200
# Writes to one TrainingRun from creation to Succeeded: one status write per
# phase (Pending, Running, Succeeded; kopf's record of the handled spec rides
# in the first), wake-up stamps, and a few retries for conflicts and outages.
MAX_WRITES_PER_OBJECT = 12
# Under this load on a shared 2-core machine the apiserver takes minutes to be ready.
RESTART_TIMEOUT = 600


def kwok_run(name: str) -> dict:
    return {
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": {
            "datasetRef": {"name": "iris"},
            "trainer": {"estimator": "sklearn.linear_model.LogisticRegression"},
            "scheduling": {
                "nodeSelector": {"type": "kwok"},
                "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
            },
        },
    }


def settled_requests(control_plane) -> Counter | None:
    """The apiserver's request counts, if no TrainingRun was written over two
    resyncs; None otherwise."""
    first = apiserver_requests(control_plane)
    time.sleep(2 * RESYNC_SECONDS)
    second = apiserver_requests(control_plane)
    return second if writes(second, "trainingruns") == writes(first, "trainingruns") else None


def reconciles(operator) -> float:
    """TrainingRun reconciles the operator has run, from its own metrics."""
    with urllib.request.urlopen(operator.metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    found = re.findall(r'flywheel_reconcile_total\{kind="TrainingRun",result="\w+"\} (\S+)', text)
    return sum(float(n) for n in found)


def progress(api, namespace: str) -> Counter:
    items = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "trainingruns")["items"]
    return Counter((i.get("status") or {}).get("phase") for i in items)


@pytest.mark.timeout(1500)
def test_operator_reconnects_after_apiserver_and_etcd_restarts(
    control_plane, operator, iris, objects, namespace, kube_api, mlflow_server
):
    if not hasattr(control_plane, "restart"):
        pytest.skip("a cluster this session did not start is not ours to restart")
    api = client.CustomObjectsApi(kube_api)
    names = [f"r-{i:03d}" for i in range(OBJECTS)]
    reconciled = reconciles(operator)
    for name in names[: OBJECTS // 2]:
        objects.create(namespace, kwok_run(name))
    print(f"\nbefore the apiserver restart: {dict(progress(api, namespace))}")
    control_plane.restart("kube-apiserver", timeout=RESTART_TIMEOUT)

    for name in names[OBJECTS // 2 :]:
        objects.create(namespace, kwok_run(name))
    print(f"before the etcd+apiserver restart: {dict(progress(api, namespace))}")
    control_plane.restart("etcd", "kube-apiserver", timeout=RESTART_TIMEOUT)
    print(f"after the restarts: {dict(progress(api, namespace))}")

    wait_for(
        lambda: progress(api, namespace)["Succeeded"] == OBJECTS,
        timeout=900,
        every=3,
        what=f"all {OBJECTS} TrainingRuns to succeed",
    )
    assert operator.process.poll() is None, "the operator died"
    per_object = (reconciles(operator) - reconciled) / OBJECTS
    print(f"reconciles per TrainingRun, creation to Succeeded: {per_object:.1f}")

    # Every object once: one Job each (by name, so one per object), one MLflow run each.
    jobs = client.BatchV1Api(kube_api).list_namespaced_job(namespace).items
    owners = [(j.metadata.labels or {}).get(f"{GROUP}/trainingrun") for j in jobs]
    per_run = Counter(owner for owner in owners if owner)  # not the Dataset's snapshot
    assert set(per_run) == set(names) and set(per_run.values()) == {1}, per_run
    for name in names[:: OBJECTS // 10]:  # a sample: each search is an MLflow round trip
        status = objects.get(namespace, "TrainingRun", name)["status"]
        found = mlflow_runs(mlflow_server.tracking_uri, f"{namespace}/iris", name)
        assert found == [status["mlflowRunId"]], (name, found)

    # Writes since the last restart, for all 200 objects, until converged:
    # writes under way when the last object reported Succeeded (a wake-up's
    # annotation and kopf's record of handling it) land a moment later, so
    # converged is when the count stops moving. A hot loop never stops.
    converged = wait_for(
        lambda: settled_requests(control_plane),
        timeout=120,
        every=0,
        what="TrainingRun writes to stop (a hot loop never does)",
    )
    per_object = writes(converged, "trainingruns") / OBJECTS
    print(f"TrainingRun writes per object since the last restart: {per_object:.2f}")
    print(f"Job writes since the last restart: {writes(converged, 'jobs'):.0f}")
    assert per_object <= MAX_WRITES_PER_OBJECT
    # ... and none at all over four resyncs once converged.
    time.sleep(4 * RESYNC_SECONDS)
    later = apiserver_requests(control_plane)
    assert writes(later, "trainingruns") == writes(converged, "trainingruns"), "hot loop"
    reads = {k: later[k] - converged[k] for k in later if k[0] == "trainingruns"}
    print(f"TrainingRun requests over four resyncs once converged: {reads}")
