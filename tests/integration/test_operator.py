"""`flywheel run` against the real control plane: status, Events, metrics, and
objects it cannot act on."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from kube_helpers import RESYNC_SECONDS, wait_for
from kubernetes import client, watch
from sample_data import upload_sample_data
from training_helpers import orphan_run, ready_condition

from flywheel.api.kinds import BY_KIND
from flywheel.builders.drift import drift_selector

ROOT = Path(__file__).resolve().parents[2]
LEGACY_RECORD = "mlops.flywheel.dev/last-handled-configuration"
pytestmark = pytest.mark.integration


def samples() -> list[dict]:
    docs = []
    for path in sorted((ROOT / "manifests" / "samples").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] in BY_KIND]
    return docs


def reported(objects, namespace, kind, name, generation=1):
    """The status once the operator has acted on this generation, else None."""
    status = objects.get(namespace, kind, name).get("status") or {}
    if status.get("observedGeneration") == generation and status.get("conditions"):
        return status
    return None


def events_for(kube_api, namespace, name) -> list:
    events = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
    return [e for e in events if e.involved_object.name == name]


@pytest.fixture
def sample_data(object_store, artifact_secret):
    upload_sample_data(object_store)


def test_samples_get_status_conditions_and_events(
    operator, objects, namespace, kube_api, sample_data
):
    for obj in samples():
        objects.create(namespace, obj)
    # Created in one go, as `kubectl apply -k` does: references resolve
    # within a few resyncs, whatever order the operator sees them in.
    for obj in samples():
        kind, name = obj["kind"], obj["metadata"]["name"]
        status = wait_for(
            lambda k=kind, n=name: _accepted(objects, namespace, k, n),
            timeout=30,
            what=f"{kind} {name} to be Accepted",
        )
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] and ready["message"], ready
    wait_for(lambda: events_for(kube_api, namespace, "iris"), what="Events about iris")


def _accepted(objects, namespace, kind, name):
    status = reported(objects, namespace, kind, name)
    conditions = {c["type"]: c for c in (status or {}).get("conditions", [])}
    return status if conditions.get("Accepted", {}).get("status") == "True" else None


def test_spec_change_moves_observed_generation(operator, objects, namespace):
    objects.create(namespace, samples()[0])  # the Dataset
    wait_for(lambda: reported(objects, namespace, "Dataset", "iris"), what="first status")
    objects.patch(namespace, "Dataset", "iris", {"spec": {"refreshInterval": "5m"}})
    wait_for(lambda: reported(objects, namespace, "Dataset", "iris", 2), what="generation 2")


def test_missing_reference_is_named_then_resolved(operator, objects, namespace, kube_api):
    run = next(o for o in samples() if o["kind"] == "TrainingRun")
    objects.create(namespace, run)

    def not_found():
        found = objects.condition(namespace, "TrainingRun", "iris-rf", "Accepted")
        return found if found and found["reason"] == "DatasetNotFound" else None

    accepted = wait_for(not_found, timeout=30, what="DatasetNotFound")
    assert accepted["status"] == "False"
    assert "spec.datasetRef.name" in accepted["message"] and "'iris'" in accepted["message"]
    warnings = [e for e in events_for(kube_api, namespace, "iris-rf") if e.type == "Warning"]
    assert any(e.reason == "DatasetNotFound" for e in warnings)

    objects.create(namespace, samples()[0])  # the Dataset appears

    def resolved():
        found = objects.condition(namespace, "TrainingRun", "iris-rf", "Accepted")
        return found and found["status"] == "True"

    wait_for(resolved, timeout=10 * RESYNC_SECONDS, what="the reference to resolve")


def test_converged_objects_are_not_written_again(
    operator, objects, namespace, kube_api, sample_data
):
    for obj in samples():
        objects.create(namespace, obj)
    for obj in samples():
        wait_for(lambda o=obj: reported(objects, namespace, o["kind"], o["metadata"]["name"]))
    # The loop runs: snapshot, training, registration, serving (which moves the
    # production alias, a ModelVersion status change). Then nothing moves.
    settled = {"Dataset": {"Ready"}, "TrainingRun": {"Succeeded", "Failed"}}
    settled.update(ModelVersion={"Servable", "Failed"}, InferenceService={"Ready", "Failed"})
    for obj in samples():
        if obj["kind"] in settled:
            wait_for(
                lambda o=obj: _phase(objects, namespace, o) in settled[o["kind"]],
                timeout=240,
                what=f"{obj['kind']} {obj['metadata']['name']} to settle",
            )
    # kopf finishes its own bookkeeping writes shortly after, and
    # the ModelVersion reports the alias the InferenceService moved.
    wait_for(
        lambda: (
            "production"
            in (objects.get(namespace, "ModelVersion", "iris-v1").get("status") or {}).get(
                "aliases", []
            )
        ),
        timeout=60,
        what="the production alias on the served ModelVersion",
    )
    time.sleep(RESYNC_SECONDS)
    # The sample's drift checks run every quarter hour, and a check that
    # finishes is news the InferenceService's status reports: not a hot loop.
    # A window a check fell in is measured again once the check is recorded
    # (the next window cannot hold another quarter hour).
    for _ in range(2):
        checks = _drift_checks(kube_api, namespace)
        before = {o["kind"]: _version(objects, namespace, o) for o in samples()}
        time.sleep(4 * RESYNC_SECONDS)  # four resyncs of every object
        after = {o["kind"]: _version(objects, namespace, o) for o in samples()}
        started = _drift_checks(kube_api, namespace) - checks
        if not started:
            break
        newest = max(started)  # CronJob Jobs are named after their minute
        wait_for(
            lambda job=newest: _drift_status(objects, namespace).get("job") == job,
            timeout=120,
            what=f"the drift check {newest} the schedule started to be recorded",
        )
        time.sleep(RESYNC_SECONDS)
    assert before == after, "a converged object was written again (hot loop)"


def _drift_status(objects, namespace) -> dict:
    status = objects.get(namespace, "InferenceService", "iris").get("status") or {}
    return status.get("drift") or {}


def _drift_checks(kube_api, namespace) -> set[str]:
    """The sample InferenceService's drift check Jobs, by name."""
    selector = ",".join(f"{k}={v}" for k, v in drift_selector("iris").items())
    jobs = client.BatchV1Api(kube_api).list_namespaced_job(namespace, label_selector=selector)
    return {job.metadata.name for job in jobs.items}


def _phase(objects, namespace, obj) -> str | None:
    got = objects.get(namespace, obj["kind"], obj["metadata"]["name"])
    return (got.get("status") or {}).get("phase")


def _version(objects, namespace, obj) -> str:
    got = objects.get(namespace, obj["kind"], obj["metadata"]["name"])
    return got["metadata"]["resourceVersion"]


def test_kopfs_records_live_in_status_not_in_annotations(operator, objects, namespace):
    objects.create(namespace, samples()[0])
    wait_for(lambda: reported(objects, namespace, "Dataset", "iris"))
    time.sleep(1)
    dataset = objects.get(namespace, "Dataset", "iris")
    meta = dataset["metadata"]
    keys = list(meta.get("annotations", {})) + list(meta.get("finalizers", []))
    assert not [k for k in keys if "kopf" in k or k.startswith("mlops.flywheel.dev/")], keys
    assert "last-handled-configuration" in dataset["status"]["flywheel"]


def test_metrics_and_liveness(operator, objects, namespace):
    objects.create(namespace, samples()[0])
    wait_for(lambda: reported(objects, namespace, "Dataset", "iris"))
    with urllib.request.urlopen(operator.liveness_url, timeout=5) as answer:
        assert answer.status == 200
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    ok = re.search(r'flywheel_reconcile_total\{kind="Dataset",result="ok"\} (\d+)', text)
    assert ok and float(ok.group(1)) >= 1, text[:2000]
    assert re.search(r'flywheel_objects\{kind="Dataset",phase="[A-Za-z]+"\} [1-9]', text)
    assert 'flywheel_reconcile_duration_seconds_count{kind="Dataset"}' in text


LOOSE_SPEC = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


@pytest.fixture
def loosened_dataset_crd(control_plane, crds):
    """The Dataset CRD with its spec schema switched off, as an old or hand-edited
    CRD would be, so that a malformed object can reach the operator."""
    path = crds / "mlops.flywheel.dev_datasets.yaml"
    crd = yaml.safe_load(path.read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = LOOSE_SPEC
    loose = path.parent.parent / ".cache" / "loose-dataset-crd.yaml"
    loose.parent.mkdir(exist_ok=True)
    loose.write_text(yaml.safe_dump(crd))
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(loose))
    yield
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))


def test_malformed_object_gets_a_condition_and_the_operator_carries_on(
    operator, objects, namespace, kube_api, loosened_dataset_crd
):
    malformed = {
        "kind": "Dataset",
        "metadata": {"name": "malformed"},
        "spec": {"source": {"uri": "s3://b/x", "format": "xml"}, "quality": {"minRows": "many"}},
    }
    time.sleep(1)  # the apiserver serves the loosened schema shortly after apply
    log_start = operator.log_size()
    objects.create(namespace, malformed)
    status = wait_for(lambda: reported(objects, namespace, "Dataset", "malformed"), timeout=30)
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "spec.source.format" in ready["message"]
    assert "spec.quality.minRows" in ready["message"]
    warnings = [e for e in events_for(kube_api, namespace, "malformed") if e.type == "Warning"]
    assert any(e.reason == "InvalidSpec" for e in warnings)

    # Others are still served, and the bad one is not retried in a loop.
    objects.create(namespace, samples()[0])
    wait_for(lambda: reported(objects, namespace, "Dataset", "iris"), what="a good object")
    version = _version(objects, namespace, malformed)
    time.sleep(3 * RESYNC_SECONDS)
    assert _version(objects, namespace, malformed) == version
    assert operator.process.poll() is None, "the operator died"
    assert "Traceback" not in operator.log_text(since=log_start)


def test_no_finalizer_holds_objects_and_the_resync_still_reconciles_them(
    operator, objects, namespace
):
    """The resync is the operator's own loop, not kopf's timer, so kopf puts
    no finalizer on the objects: a delete is done at once, operator or not."""
    run = orphan_run("orphan")
    log_start = operator.log_size()
    objects.create(namespace, run)
    status = wait_for(lambda: reported(objects, namespace, "TrainingRun", "orphan"))
    assert "finalizers" not in objects.get(namespace, "TrainingRun", "orphan")["metadata"]

    # Someone else overwrites the phase. That is no spec change and wakes
    # nothing: only the resync sees it, and puts the operator's back.
    time.sleep(2 * RESYNC_SECONDS)  # the operator has seen its own write land
    tampered = "Failed" if status["phase"] != "Failed" else "Pending"
    objects.api.patch_namespaced_custom_object_status(
        "mlops.flywheel.dev", "v1alpha1", namespace, "trainingruns", "orphan",
        {"status": {"phase": tampered}},
    )  # fmt: skip
    assert objects.get(namespace, "TrainingRun", "orphan")["status"]["phase"] == tampered
    wait_for(
        lambda: (
            objects.get(namespace, "TrainingRun", "orphan")["status"]["phase"] == status["phase"]
        ),
        timeout=10 * RESYNC_SECONDS,
        what=f"the resync to put phase {status['phase']} back",
    )

    objects.api.delete_namespaced_custom_object(
        "mlops.flywheel.dev", "v1alpha1", namespace, "trainingruns", "orphan"
    )
    with pytest.raises(client.ApiException) as gone:  # no finalizer: gone at once
        objects.get(namespace, "TrainingRun", "orphan")
    assert gone.value.status == 404
    time.sleep(2 * RESYNC_SECONDS)  # it left the schedule: no resync fails on it
    log = operator.log_text(since=log_start)
    assert "Traceback" not in log and "resync of TrainingRun" not in log


def test_a_create_and_an_edit_cost_one_write_each(operator, objects, namespace):
    """kopf's record of the handled spec rides in the operator's status write
    (controllers/diffbase.py): no metadata PATCH of its own."""
    changes: list[dict] = []

    def record():
        stream = watch.Watch()
        for event in stream.stream(
            objects.api.list_namespaced_custom_object, "mlops.flywheel.dev", "v1alpha1",
            namespace, "trainingruns", field_selector="metadata.name=counted",
            timeout_seconds=int(8 * RESYNC_SECONDS) + 10,
        ):  # fmt: skip
            changes.append(event["object"])

    watcher = threading.Thread(target=record, daemon=True)
    watcher.start()
    time.sleep(1)  # the watch is open before the object exists
    objects.create(namespace, orphan_run("counted"))
    wait_for(lambda: reported(objects, namespace, "TrainingRun", "counted"))
    time.sleep(3 * RESYNC_SECONDS)  # resyncs of a converged object write nothing
    assert len(changes) == 2, [c["metadata"]["resourceVersion"] for c in changes]
    handled = changes[-1]
    assert LEGACY_RECORD not in (handled["metadata"].get("annotations") or {})
    recorded = json.loads(handled["status"]["flywheel"]["last-handled-configuration"])
    assert recorded["spec"] == handled["spec"]  # with the schema's defaults

    objects.patch(namespace, "TrainingRun", "counted", {"spec": {"datasetRef": {"name": "gone"}}})
    status = wait_for(lambda: reported(objects, namespace, "TrainingRun", "counted", 2))
    assert "gone" in ready_condition(status)["message"], status
    time.sleep(3 * RESYNC_SECONDS)
    assert len(changes) == 4, "the edit and the operator's one status write"
    watcher.join(timeout=20)


def test_an_older_operators_record_is_read_until_the_next_edit_moves_it(
    operator, objects, namespace
):
    """Objects from before kopf's records moved to status carry them in an
    annotation, under kopf's marker: read as the handled spec (no reconcile
    of an unchanged object), then moved to status by the next edit."""
    objects.create(namespace, orphan_run("older"))
    wait_for(lambda: reported(objects, namespace, "TrainingRun", "older"))
    record = objects.get(namespace, "TrainingRun", "older")["status"]["flywheel"][
        "last-handled-configuration"
    ]
    # What an older operator left: the record in an annotation, none in status.
    legacy = {LEGACY_RECORD: record + "\n", "mlops.flywheel.dev/kopf-managed": "yes"}
    objects.patch(namespace, "TrainingRun", "older", {"metadata": {"annotations": legacy}})
    objects.api.patch_namespaced_custom_object_status(
        "mlops.flywheel.dev", "v1alpha1", namespace, "trainingruns", "older",
        {"status": {"flywheel": None}},
    )  # fmt: skip
    before = objects.get(namespace, "TrainingRun", "older")
    time.sleep(3 * RESYNC_SECONDS)
    after = objects.get(namespace, "TrainingRun", "older")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "flywheel" not in after["status"]

    objects.patch(namespace, "TrainingRun", "older", {"spec": {"datasetRef": {"name": "gone"}}})
    wait_for(lambda: reported(objects, namespace, "TrainingRun", "older", 2))
    moved = wait_for(
        lambda: (
            (body := objects.get(namespace, "TrainingRun", "older"))
            and LEGACY_RECORD not in body["metadata"]["annotations"]
            and body
        ),
        what="the annotation to go",
    )
    recorded = json.loads(moved["status"]["flywheel"]["last-handled-configuration"])
    assert recorded["spec"]["datasetRef"]["name"] == "gone"
