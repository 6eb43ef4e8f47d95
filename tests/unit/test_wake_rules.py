"""Who waits on whom, and which changes wake them (controllers/wake.py).

The integration test tests/integration/test_wake.py runs the whole loop with a
one-hour resync, so that only these wake-ups can move it."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from flywheel.controllers import wake
from flywheel.controllers.wake import Changes, state_of, waiting_on, waits_on
from flywheel.integrations import watched


def test_what_each_kind_waits_on():
    assert waits_on("TrainingRun", {"datasetRef": {"name": "iris"}}, {}) == {("Dataset", "iris")}
    assert waits_on("ModelVersion", {"source": {"trainingRun": "r1"}}, {}) == {
        ("TrainingRun", "r1")
    }
    assert waits_on("ModelVersion", {"source": {"mlflowRunId": "abc"}}, {}) == set()
    service = waits_on(
        "InferenceService",
        {"stable": {"modelVersion": "v1"}, "canary": {"modelVersion": "v2"}},
        {"retrain": {"candidate": "v3", "inFlight": ["retrain-1"]}},
    )
    assert service == {
        ("ModelVersion", "v1"),
        ("ModelVersion", "v2"),
        ("ModelVersion", "v3"),
        ("TrainingRun", "retrain-1"),
    }
    assert waits_on("Dataset", {"source": {}}, {}) == set()


def test_waiters_are_found_across_the_indexes():
    indexes = {
        "ModelVersion": {("ns", "TrainingRun", "r1"): ["m1"]},
        "InferenceService": {
            ("ns", "TrainingRun", "r1"): ["web"],
            ("ns", "ModelVersion", "m1"): ["web"],
        },
    }
    assert waiting_on("TrainingRun", "ns", "r1", indexes) == {
        ("ModelVersion", "m1"),
        ("InferenceService", "web"),
    }
    assert waiting_on("TrainingRun", "other", "r1", indexes) == set()


def ready(reason, phase="Pending", **status):
    return {
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "False", "reason": reason, "message": "m"}],
            **status,
        }
    }


def test_only_a_change_of_what_waiters_act_on_wakes_them():
    changes = Changes()
    first = state_of("ModelVersion", ready("Registering"))
    # The operator's first listing wakes nobody: the resume handlers cover it.
    assert not changes.changed("ModelVersion", "ns", "m1", None, first)
    assert not changes.changed("ModelVersion", "ns", "m1", "MODIFIED", first)
    # A new message or timestamp is not a change for those waiting ...
    reworded = ready("Registering")
    reworded["status"]["conditions"][0]["message"] = "still registering"
    reworded["status"]["lastTransitionTime"] = "2026-12-03T21:00:00Z"
    assert not changes.changed(
        "ModelVersion", "ns", "m1", "MODIFIED", state_of("ModelVersion", reworded)
    )
    # ... the phase, servability and registry version are.
    servable = ready("Servable", phase="Servable", servable=True, registryVersion="3")
    assert changes.changed(
        "ModelVersion", "ns", "m1", "MODIFIED", state_of("ModelVersion", servable)
    )
    assert not changes.changed(
        "ModelVersion", "ns", "m1", "MODIFIED", state_of("ModelVersion", servable)
    )


def test_new_and_deleted_objects_wake_their_waiters():
    changes = Changes()
    state = state_of("ModelVersion", {})
    assert changes.changed("ModelVersion", "ns", "m2", "ADDED", state)
    assert changes.changed("ModelVersion", "ns", "m2", "DELETED", state)
    # Deleted and then created again under the same name: news again.
    assert changes.changed("ModelVersion", "ns", "m2", "ADDED", state)


def test_a_job_wakes_its_owner_when_it_finishes():
    changes = Changes()
    created, running = {"status": {}}, {"status": {"active": 1}}
    done = {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}
    job = ("Job", "ns", "train-r1")
    # Its owner just created it, and a start changes nothing the owner acts on.
    assert not changes.changed(*job, "ADDED", state_of("Job", created), new_is_news=False)
    assert not changes.changed(*job, "MODIFIED", state_of("Job", running), new_is_news=False)
    assert changes.changed(*job, "MODIFIED", state_of("Job", done), new_is_news=False)
    assert not changes.changed(*job, "MODIFIED", state_of("Job", done), new_is_news=False)


def test_a_deployment_wakes_its_owner_as_its_pods_become_ready():
    changes = Changes()
    deployment = ("Deployment", "ns", "web-stable")
    rolling = {"status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2}}
    ready = {"status": {**rolling["status"], "readyReplicas": 2, "availableReplicas": 2}}
    assert not changes.changed(*deployment, "ADDED", state_of("Deployment", {}), new_is_news=False)
    assert changes.changed(
        *deployment, "MODIFIED", state_of("Deployment", rolling), new_is_news=False
    )
    assert changes.changed(
        *deployment, "MODIFIED", state_of("Deployment", ready), new_is_news=False
    )
    assert changes.changed(*deployment, "DELETED", state_of("Deployment", ready), new_is_news=False)


def test_a_timed_wake_up_rings_once_and_the_earliest_wins(monkeypatch):
    rung = []
    monkeypatch.setattr(wake, "request_reconcile", lambda *args: rung.append(args[:3]))
    alarms = wake._Alarms()
    assert alarms.set("InferenceService", "ns", "web", 2.0)
    assert not alarms.set("InferenceService", "ns", "web", 2.2), "a later one is not needed"
    assert alarms.set("InferenceService", "ns", "web", 0.05), "an earlier one replaces it"
    deadline = time.monotonic() + 5
    while alarms.pending() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(2.2)  # the replaced alarm would have rung by now
    assert rung == [("InferenceService", "ns", "web")]


def test_a_check_due_after_the_resync_is_left_to_the_resync(monkeypatch):
    set_calls = []
    monkeypatch.setattr(wake.ALARMS, "set", lambda *args: set_calls.append(args))
    wake.request_reconcile_after("InferenceService", "ns", "web", wake.RESYNC_SECONDS + 1)
    wake.request_reconcile_after("InferenceService", "ns", "web", 3.0)
    assert set_calls == [("InferenceService", "ns", "web", 3.0 + wake.ALARM_SLACK)]


def test_a_childs_event_is_taken_while_every_handler_thread_is_busy(monkeypatch):
    # In a burst every handler thread is reconciling. A child's event is
    # recorded at once (it used to wait for a thread, holding the child's
    # body meanwhile); only the wake-up's API call waits for a thread.
    stamped = []
    monkeypatch.setattr(wake, "request_reconcile", lambda *args: stamped.append(args[:3]))
    monkeypatch.setattr(wake, "CHANGES", Changes())
    busy = threading.Event()
    threads = ThreadPoolExecutor(max_workers=1)
    threads.submit(busy.wait, 10)  # the only handler thread
    monkeypatch.setattr(wake, "HANDLER_THREADS", [threads])
    labels = {"app.kubernetes.io/managed-by": "flywheel", "mlops.flywheel.dev/trainingrun": "r1"}
    meta = {"name": "r1-train", "namespace": "ns", "labels": labels}
    running = {"metadata": meta, "status": {"active": 1}}
    complete = {
        "metadata": meta,
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    on_event = wake.CHILD_HANDLERS["Job"]

    async def deliver():
        for body in (running, complete):
            event = {"type": "MODIFIED", "object": body}
            handled = asyncio.create_task(
                on_event(event=event, body=body, namespace="ns", name="r1-train", labels=labels)
            )
            await asyncio.sleep(0.05)
            assert watched.get("batch/v1", "Job", "ns", "r1-train")["status"] == body["status"]
        assert stamped == [], "the stamp waits for the busy thread"
        busy.set()
        await asyncio.wait_for(handled, 5)

    try:
        asyncio.run(deliver())
    finally:
        busy.set()
        threads.shutdown()
        watched.clear()
    assert stamped == [("TrainingRun", "ns", "r1")]
