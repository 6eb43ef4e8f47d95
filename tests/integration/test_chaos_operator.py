"""Issue #9, property 1: the operator survives its own death.

The whole loop of the samples (snapshot, training, registration, serving with
drift monitoring) runs while the operator is SIGKILLed, each time at a random
moment (seeded) after it came back up: kopf resumes every object at start, so
kills land inside reconciles, and no handler or finally-block gets to tidy
up. Then two drift checks find drift while the kills go on. Afterwards a user
finds exactly one of every child, one MLflow run per training, one registry
version per ModelVersion, one retraining for the one detection the policy
acts on, each check counted once, and every status final and still.

Training, serving and the checks' pods run for real on the pod-runner node:
the children that matter most (the training Job, its MLflow run, the
ModelVersion it registers) come from real outcomes, not from kwok's invented
ones. Only the checks' verdict is fixed (chaos_helpers.drift_check_job).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest
from chaos_helpers import (
    children,
    converged,
    drift_check_job,
    job_complete,
    mlflow_runs,
    phase,
    registry_versions,
    samples,
    still,
)
from kube_helpers import RESYNC_SECONDS, wait_for
from kubernetes import client
from sample_data import upload_sample_data

from flywheel.builders.retrain import retrain_run_name

pytestmark = pytest.mark.integration

# `make soak` runs the 50 kills of the issue; `make test` fewer, to fit its time.
KILLS = int(os.environ.get("CHAOS_KILLS", "12"))
SEED = 9
# Kill points: up to this long after the operator answers its liveness probe.
# Resuming every object starts at once; the first TrainingRun or
# ModelVersion reconcile after a start imports MLflow and calls it, which
# takes several seconds on a busy machine: shorter windows would never let
# training start, longer ones only let the loop converge before the kills end.
MAX_DELAY = 12.0


@pytest.fixture
def sample_data(object_store, artifact_secret):
    upload_sample_data(object_store)


@pytest.fixture
def revived(operator):
    """The session's operator, running again whatever happens to the test."""
    yield operator
    if operator.process.poll() is not None:
        operator.start()


# Each kill costs a restart and resuming every object: about a minute on a busy machine.
@pytest.mark.timeout(max(2400, 600 + 60 * KILLS))
def test_sigkill_at_random_points_leaves_one_of_everything(
    revived, objects, namespace, kube_api, sample_data, mlflow_server
):
    operator = revived
    rng = random.Random(SEED)
    for obj in samples():
        objects.create(namespace, obj)
    pairs = [(o["kind"], o["metadata"]["name"]) for o in samples()]
    drift_kills = max(2, KILLS // 5)

    # Where each kill found the objects: (kind, phase) -> kills, for the report.
    found_at: Counter[tuple[str, str | None]] = Counter()
    kill_at_random(operator, rng, KILLS - drift_kills, objects, namespace, pairs, found_at)
    wait_converged(objects, namespace, pairs)
    # The served ModelVersion reports the alias the InferenceService moved.
    wait_for(
        lambda: (
            "production"
            in (objects.get(namespace, "ModelVersion", "iris-v1")["status"]).get("aliases", [])
        ),
        timeout=60,
        what="the production alias on iris-v1",
    )

    got = {pair: objects.get(namespace, *pair) for pair in pairs}
    owned = {
        pair: children(kube_api, namespace, obj["metadata"]["uid"]) for pair, obj in got.items()
    }
    run = got[("TrainingRun", "iris-rf")]["status"]
    assert run["phase"] == "Succeeded", run

    # Dataset: one snapshot, one Job.
    assert owned[("Dataset", "iris")] == {"Job": ["iris-snapshot-1"]}
    # TrainingRun: one Job with one pod (started once), one MLflow run, one ModelVersion.
    uri = mlflow_server.tracking_uri
    assert_trained_once(kube_api, namespace, uri, "iris-rf", owned[("TrainingRun", "iris-rf")], run)
    assert run["modelVersion"] in owned[("TrainingRun", "iris-rf")]["ModelVersion"]
    assert run.get("rounds") == 1 and not run.get("history"), run
    # ModelVersions: one registry version each, the hand-written one and the trained one.
    for name in ("iris-v1", run["modelVersion"]):
        status = objects.get(namespace, "ModelVersion", name)["status"]
        versions = registry_versions(mlflow_server.tracking_uri, "iris", namespace, name)
        assert versions == [status["registryVersion"]], (name, versions)
    # InferenceService: one Deployment for the stable track, one drift CronJob.
    served = owned[("InferenceService", "iris")]
    assert len(served["Deployment"]) == 1, served
    assert len(served["CronJob"]) == 1, served
    assert not served.get("TrainingRun"), "a retraining started without any drift check"

    # Drift: two checks find drift while the operator keeps dying. The
    # sample's policy (cooldown 1h, one retraining in flight) answers the
    # first with one retraining and the second with none; its model is only
    # offered (autoDeploy none), so no canary analysis stretches the test.
    objects.patch(
        namespace, "InferenceService", "iris", {"spec": {"retrain": {"autoDeploy": "none"}}}
    )
    checks = ["iris-drift-chaos-1", "iris-drift-chaos-2"]
    batch = client.BatchV1Api(kube_api)
    for i, check in enumerate(checks):
        batch.create_namespaced_job(namespace, drift_check_job("iris", check))
        wait_for(lambda c=check: job_complete(kube_api, namespace, c), timeout=120, what=check)
        kills = drift_kills // 2 if i == 0 else drift_kills - drift_kills // 2
        kill_at_random(operator, rng, kills, objects, namespace, pairs, found_at)
    print(f"\n{KILLS} SIGKILLs; unconverged (kind, phase) at the kills: {dict(found_at)}")

    def drift_read():
        status = objects.get(namespace, "InferenceService", "iris").get("status") or {}
        retrain = status.get("retrain") or {}
        done = (status.get("drift") or {}).get("job") == checks[-1] and not retrain.get("inFlight")
        return status if done else None

    status = wait_for(drift_read, timeout=400, what="both checks read, the retraining finished")
    wait_converged(objects, namespace, pairs)
    assert status["drift"]["consecutiveDetections"] == 2, "a check was counted twice (or not)"
    assert status["retrain"]["triggered"] == 1, status["retrain"]
    retrained = children(kube_api, namespace, got[("InferenceService", "iris")]["metadata"]["uid"])
    assert retrained["TrainingRun"] == [retrain_run_name("iris", checks[0])], retrained
    again = objects.get(namespace, "TrainingRun", retrained["TrainingRun"][0])
    owned_again = children(kube_api, namespace, again["metadata"]["uid"])
    name = again["metadata"]["name"]
    assert_trained_once(kube_api, namespace, uri, name, owned_again, again["status"])

    # Converged means still: no object is written again over several resyncs.
    # The retraining registered a new version of the same MLflow model, which
    # takes its `candidate` alias; the other ModelVersions report their
    # aliases on their next resync. Let that settle (two resyncs), then watch.
    everything = [
        *pairs,
        ("TrainingRun", again["metadata"]["name"]),
        ("ModelVersion", again["status"]["modelVersion"]),
    ]
    wait_converged(objects, namespace, everything)
    time.sleep(2 * RESYNC_SECONDS)
    before, after = still(objects, namespace, everything, 3 * RESYNC_SECONDS)
    assert before == after, "an object kept changing after the kills (flapping)"


def kill_at_random(operator, rng, kills, objects, namespace, pairs, found_at) -> None:
    """SIGKILL the operator `kills` times, each a random moment after it came
    back; note which objects each kill caught unconverged, and in what phase."""
    for _ in range(kills):
        time.sleep(rng.uniform(0, MAX_DELAY))
        operator.kill()
        for kind, name in pairs:
            if not converged(objects, namespace, kind, name):
                found_at[(kind, phase(objects, namespace, kind, name))] += 1
        operator.start()


def wait_converged(objects, namespace, pairs) -> None:
    for kind, name in pairs:
        wait_for(
            lambda k=kind, n=name: converged(objects, namespace, k, n),
            timeout=400,
            what=f"{kind} {name} to converge after the kills",
        )


def assert_trained_once(kube_api, namespace, tracking_uri, run_name, owned, status) -> None:
    """A TrainingRun's one Job, whose one pod trained once, and one MLflow run."""
    assert owned["Job"] == [status["jobName"]], owned
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={status['jobName']}"
    )
    started = [p.metadata.name for p in pods.items]
    assert len(started) == 1, f"the training pod was started {len(started)} times: {started}"
    runs = mlflow_runs(tracking_uri, f"{namespace}/iris", run_name)
    assert runs == [status["mlflowRunId"]], runs
