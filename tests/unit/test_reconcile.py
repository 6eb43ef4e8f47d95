"""The shared reconcile, called as kopf would call it (Events captured)."""

from __future__ import annotations

import threading

import kopf
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from flywheel.api.conditions import FALSE, ConditionUpdate
from flywheel.api.kinds import DATASET, TRAINING_RUN
from flywheel.controllers import inferenceservices, rollout, trainingruns
from flywheel.controllers import reconcile as reconcile_module
from flywheel.controllers.backoff import Backoff
from flywheel.controllers.reconcile import Assessment, accepted, reconcile
from flywheel.metrics import PhaseBook


def waiting(spec, body) -> Assessment:
    return Assessment("Pending", [accepted(), ConditionUpdate("Ready", FALSE, "Waiting", "w")])


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Every test is a new operator process: nothing remembered of writes."""
    monkeypatch.setattr(reconcile_module, "_own_writes", {})


@pytest.fixture
def events(monkeypatch):
    posted = []
    monkeypatch.setattr(
        kopf, "event", lambda body, type, reason, message: posted.append((type, reason, message))
    )
    return posted


def body(kind: str, spec, status=None, generation=3):
    return {
        "apiVersion": "mlops.flywheel.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ns", "generation": generation, "uid": "u"},
        "spec": spec,
        "status": status or {},
    }


def scrape(book: PhaseBook) -> str:
    registry = CollectorRegistry()
    registry.register(book)
    return generate_latest(registry).decode()


def run(kind, obj, assess):
    patch = kopf.Patch()
    reconcile(kind, obj, patch, assess)
    return patch


def test_malformed_spec_becomes_a_failed_condition_not_an_exception(events):
    obj = body("Dataset", {"source": {"uri": "s3://b/p", "format": "xml"}})
    patch = run(DATASET, obj, waiting)
    status = patch["status"]
    assert status["phase"] == "Failed"
    assert status["observedGeneration"] == 3
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "spec.source.format" in ready["message"]
    assert ("Warning", "InvalidSpec") in [(t, r) for t, r, _ in events]


def test_second_reconcile_of_unchanged_object_writes_nothing(events):
    obj = body("Dataset", {"source": {"uri": "s3://b/p", "format": "csv"}})
    first = run(DATASET, obj, waiting)
    obj["status"] = dict(first["status"])
    posted = len(events)
    second = run(DATASET, obj, waiting)
    assert dict(second) == {}
    assert len(events) == posted, "no Event when nothing changed"


def test_a_valid_object_gets_no_accepted_event_but_a_fixed_one_does(events):
    # Every valid object would get the same "Accepted=True" Event: 1,000
    # writes at 1,000 objects, for what status already says.
    obj = body("Dataset", {"source": {"uri": "s3://b/p", "format": "csv"}})
    obj["status"] = dict(run(DATASET, obj, waiting)["status"])
    assert [r for _, r, _ in events] == ["Waiting"]
    obj["spec"]["source"]["format"] = "xml"  # broken: named in a Warning
    obj["status"] = {**obj["status"], **run(DATASET, obj, waiting)["status"]}
    assert ("Warning", "InvalidSpec") in [(t, r) for t, r, _ in events]
    obj["spec"]["source"]["format"] = "csv"  # fixed: said so
    posted = len(events)
    run(DATASET, obj, waiting)
    fixed = [e for e in events[posted:] if e[1] == "Valid"]
    assert fixed and fixed[0][0] == "Normal" and fixed[0][2].startswith("Accepted=True")


class FakeIndex(dict):
    """kopf.Index maps a key to a store of values."""


def test_missing_dataset_is_named_with_the_field(events):
    obj = body("TrainingRun", {"datasetRef": {"name": "nope"}, "container": {"image": "i"}})
    patch = run(TRAINING_RUN, obj, lambda s, b: trainingruns.assess(s, b, FakeIndex()))
    accepted = next(c for c in patch["status"]["conditions"] if c["type"] == "Accepted")
    assert accepted["reason"] == "DatasetNotFound"
    assert "spec.datasetRef.name" in accepted["message"] and "'nope'" in accepted["message"]
    present = FakeIndex({("ns", "nope"): [{"phase": "Ready", "version": "ab" * 32, "spec": {}}]})
    obj["status"] = dict(patch["status"])
    patch = run(TRAINING_RUN, obj, lambda s, b: trainingruns.assess(s, b, present))
    accepted = next(c for c in patch["status"]["conditions"] if c["type"] == "Accepted")
    assert accepted["status"] == "True"


def mlflow_down(spec, body) -> Assessment:
    why = "MLflow at http://mlflow is unavailable: connection refused"
    return Assessment(
        "Pending", [accepted(), ConditionUpdate("Ready", FALSE, "MLflowUnavailable", why)]
    )


def test_a_dependency_outage_is_retried_after_a_doubling_delay(events, monkeypatch):
    now = [0.0]
    backoff = Backoff(first=5.0, cap=60.0, clock=lambda: now[0])
    monkeypatch.setattr("flywheel.controllers.reconcile.DEPENDENCY_BACKOFF", backoff)
    obj = body("Dataset", {"source": {"uri": "s3://b/x", "format": "csv"}}, generation=1)
    calls = []

    def assess(spec, b):
        calls.append(now[0])
        return mlflow_down(spec, b)

    for second in range(0, 40):  # a resync every second for 40 s
        now[0] = float(second)
        patch = run(DATASET, obj, assess)
        if patch.status:
            obj["status"] = {**obj["status"], **patch.status}
    assert calls == [0.0, 5.0, 15.0, 35.0]
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["message"].endswith("(attempt 4; next in 40 s)")
    assert [e[1] for e in events].count("MLflowUnavailable") == 1
    # The user changes the spec: tried at once, whatever the delay.
    obj["metadata"]["generation"] = 2
    run(DATASET, obj, assess)
    assert calls[-1] == 39.0 and len(calls) == 5
    assert len(backoff._pending) == 1, "one entry an object, not one a generation"


def test_backoff_caps_and_resets_on_success():
    now = [0.0]
    backoff = Backoff(first=5.0, cap=60.0, clock=lambda: now[0])
    delays = [backoff.failed("k")[1] for _ in range(6)]
    assert delays == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert not backoff.due("k")
    backoff.succeeded("k")
    assert backoff.due("k") and backoff.failed("k") == (1, 5.0)


def test_a_failure_at_a_new_version_starts_the_count_over():
    now = [0.0]
    backoff = Backoff(first=5.0, cap=60.0, clock=lambda: now[0])
    assert backoff.failed("k", 1) == (1, 5.0) and backoff.failed("k", 1) == (2, 10.0)
    assert not backoff.due("k", 1)
    assert backoff.due("k", 2), "a new version is tried at once"
    assert backoff.failed("k", 2) == (1, 5.0)
    now[0] = 5.0
    assert backoff.due("k", 2)


def creates_once(made: list):
    """A kind whose first step has a side effect (a Job, an MLflow run) and
    records it in status, as a TrainingRun does."""

    def assess(spec, b) -> Assessment:
        status = b.get("status") or {}
        if not status.get("job"):
            made.append("job")
            return Assessment("Running", [accepted()], {"job": "x-train"})
        return Assessment("Running", [accepted()], {"job": status["job"]})

    return assess


def test_a_reconcile_with_a_body_older_than_our_own_status_write_does_not_start_over(events):
    # A timer tick queued before the first reconcile wrote status runs with
    # the old body (kopf applies the write after the handler returns).
    made: list = []
    stale = body("Dataset", {"source": {"uri": "s3://b/p", "format": "csv"}})
    first = run(DATASET, stale, creates_once(made))
    assert first["status"]["job"] == "x-train"
    posted = len(events)
    second = run(DATASET, stale, creates_once(made))
    assert made == ["job"], "the side effect was repeated"
    assert dict(second) == {}, "the same status was written again"
    assert len(events) == posted, "the same Events were posted again"


def test_our_write_is_trusted_only_until_the_object_shows_it_or_the_grace_ends(events, monkeypatch):
    made: list = []
    obj = body("Dataset", {"source": {"uri": "s3://b/p", "format": "csv"}})
    first = run(DATASET, obj, creates_once(made))
    obj["status"] = dict(first["status"])  # it landed
    run(DATASET, obj, creates_once(made))
    assert reconcile_module._own_writes == {}, "a landed write is forgotten"
    # A write that never lands (kopf's patch failed) is written again later.
    lost = body("Dataset", {"source": {"uri": "s3://b/p", "format": "csv"}})
    lost["metadata"]["uid"] = "v"
    run(DATASET, lost, creates_once(made))
    monkeypatch.setattr(reconcile_module, "OWN_WRITE_GRACE", -1.0)
    again = run(DATASET, lost, creates_once(made))
    assert again["status"]["job"] == "x-train"


def test_conditions_that_change_together_for_one_reason_share_an_event(events):
    # An InferenceService's first reconcile: Ready=False and Progressing=True,
    # both waiting for a pod. One Event says both (at 1,000 objects, 1,000
    # writes fewer); a condition with its own message keeps its own Event.
    why = "waiting for a ready model-server pod for model"

    def pending(spec, body) -> Assessment:
        return Assessment(
            "Pending",
            [
                accepted(),
                ConditionUpdate("Ready", FALSE, "NoReadyReplicas", why),
                ConditionUpdate("Progressing", "True", "Pending", why),
            ],
        )

    obj = body("Dataset", {"source": {"uri": "s3://b/p", "format": "csv"}})
    obj["status"] = dict(run(DATASET, obj, pending)["status"])
    assert events == [("Normal", "NoReadyReplicas", f"Ready=False, Progressing=True: {why}")]

    def split(spec, body) -> Assessment:
        return Assessment(
            "Progressing",
            [
                accepted(),
                ConditionUpdate("Ready", FALSE, "NoReadyReplicas", why),
                ConditionUpdate("Progressing", "True", "RollingOut", "rolling out model (0/1)"),
            ],
        )

    run(DATASET, obj, split)
    assert events[1:] == [("Normal", "RollingOut", "Progressing=True: rolling out model (0/1)")]


def test_a_reconcile_under_way_when_its_object_is_deleted_keeps_nothing_of_it(events, monkeypatch):
    """kopf runs the resync timer apart from the delete handler. A reconcile
    that was running, or queued on the object's lock, when the handler ran
    must not put back what the handler dropped: the object would be counted
    in flywheel_objects, and its lock and status kept, for good."""
    book = PhaseBook()
    monkeypatch.setattr(reconcile_module, "PHASES", book)
    monkeypatch.setattr(reconcile_module, "_object_locks", {})
    monkeypatch.setattr(reconcile_module, "_deleted", {})
    started, release = threading.Event(), threading.Event()
    queued_assessed = []

    def slow(spec, body) -> Assessment:
        started.set()
        assert release.wait(10)
        return waiting(spec, body)

    def queued(spec, body) -> Assessment:
        queued_assessed.append(body)
        return waiting(spec, body)

    obj = body("Dataset", {"source": {"uri": "s3://b/p", "format": "csv"}})
    running = threading.Thread(target=run, args=(DATASET, obj, slow))
    running.start()
    assert started.wait(10)
    behind = threading.Thread(target=run, args=(DATASET, obj, queued))  # the next timer tick
    behind.start()
    reconcile_module.forget_object("Dataset", "ns", "x", "u")  # kopf's delete handler
    release.set()
    running.join(10)
    behind.join(10)

    assert "flywheel_objects{" not in scrape(book), "a deleted object is not counted"
    assert reconcile_module._own_writes == {}
    assert reconcile_module._object_locks == {}
    assert queued_assessed == [], "a reconcile queued before the deletion does nothing"


def test_deleting_an_object_drops_what_is_kept_for_it_and_remembers_it_a_while(monkeypatch):
    monkeypatch.setattr(reconcile_module, "_deleted", {})
    monkeypatch.setattr(rollout, "_baselines", {("uid-a", "v2"): ("stamp", None)})
    monkeypatch.setattr(inferenceservices, "ALIAS_BACKOFF", Backoff(first=5.0, cap=60.0))
    inferenceservices.ALIAS_BACKOFF.failed("uid-a/production-alias")
    clock = [1000.0]
    monkeypatch.setattr(reconcile_module.time, "monotonic", lambda: clock[0])
    reconcile_module.forget_object("Dataset", "ns", "a", "uid-a")
    clock[0] += reconcile_module.DELETED_MEMORY_SECONDS + 1
    reconcile_module.forget_object("Dataset", "ns", "b", "uid-b")
    assert rollout._baselines == {}, "a canary's baseline goes with its InferenceService"
    assert inferenceservices.ALIAS_BACKOFF.due("uid-a/production-alias")
    assert not inferenceservices.ALIAS_BACKOFF._pending, "and so do its alias retries"
    assert list(reconcile_module._deleted) == ["uid-b"]
