"""integrations/watched.py: the copy of each child the operator's watches last
delivered, which reconciles read by name instead of asking the apiserver."""

from __future__ import annotations

import pytest

from flywheel.integrations import children, watched
from flywheel.policy.jobs import deployment_has_synced, job_has_started


@pytest.fixture(autouse=True)
def empty():
    watched.clear()
    yield
    watched.clear()


def job(name: str, **status) -> dict:
    meta = {"name": name, "namespace": "ns", "managedFields": [{"manager": "kcm"}]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "status": status}


def test_the_last_event_wins_and_a_deletion_forgets():
    watched.record("batch/v1", "Job", None, job("a"))  # the first listing
    watched.record("batch/v1", "Job", "MODIFIED", job("a", active=1))
    seen = watched.get("batch/v1", "Job", "ns", "a")
    assert seen["status"] == {"active": 1}
    assert "managedFields" not in seen["metadata"] and seen["metadata"]["name"] == "a"
    assert watched.get("apps/v1", "Deployment", "ns", "a") is watched.UNKNOWN  # kinds are apart
    watched.record("batch/v1", "Job", "DELETED", job("a", active=1))
    assert watched.get("batch/v1", "Job", "ns", "a") is None  # known to be gone
    assert watched.size() == 0


def test_copies_take_about_their_json_size_and_each_reader_gets_its_own():
    # 4,000 children at 1,000 of each kind: kept as dicts and strings, a
    # Deployment took ~5x its JSON, for as long as the operator ran.
    import json
    import tracemalloc
    from pathlib import Path

    import yaml

    deployment = yaml.safe_load(
        (Path(__file__).parent / "golden/serving-deployment.yaml").read_text()
    )
    deployment["metadata"]["managedFields"] = [{"manager": "kcm", "fieldsV1": {"f:spec": {}}}]
    events = []  # each watch event arrives as JSON text, parsed afresh
    for i in range(1000):
        deployment["metadata"]["name"] = f"web-{i:04d}"
        events.append(json.dumps(deployment))
    del deployment["metadata"]["managedFields"]
    json_bytes = sum(len(json.dumps(json.loads(e), separators=(",", ":"))) for e in events)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for event in events:
            watched.record("apps/v1", "Deployment", "ADDED", json.loads(event))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1.5 * json_bytes, (held, json_bytes)

    mine = watched.get("apps/v1", "Deployment", deployment["metadata"]["namespace"], "web-0007")
    assert mine["spec"] == deployment["spec"] and mine["metadata"]["name"] == "web-0007"
    assert "managedFields" not in mine["metadata"]
    mine["spec"]["replicas"] = 99  # a reader changing its copy changes nobody else's
    theirs = watched.get("apps/v1", "Deployment", deployment["metadata"]["namespace"], "web-0007")
    assert theirs["spec"] == deployment["spec"]


def test_readers_use_the_copy_and_ask_the_apiserver_only_for_what_it_lacks(monkeypatch):
    asked = []
    service = {"metadata": {"name": "d", "namespace": "ns"}}
    monkeypatch.setattr(
        children, "_call", lambda method, path, *a, **k: asked.append(path) or service
    )
    watched.record("apps/v1", "Deployment", "ADDED", {"metadata": {"name": "d", "namespace": "ns"}})
    assert children.get("apps/v1", "Deployment", "ns", "d")["metadata"]["name"] == "d"
    assert asked == []
    children.get("v1", "Service", "ns", "d")
    children.get("v1", "Service", "ns", "d")  # the read is kept until the watch says more
    assert asked == ["/api/v1/namespaces/ns/services/d"]
    # Absence is kept too: a canary Deployment that is not there is not
    # looked for again at every resync.
    monkeypatch.setattr(children, "_call", _not_found(asked))
    assert children.get("apps/v1", "Deployment", "ns", "canary") is None
    assert children.get("apps/v1", "Deployment", "ns", "canary") is None
    assert asked[1:] == ["/apis/apps/v1/namespaces/ns/deployments/canary"]
    watched.record(
        "apps/v1", "Deployment", "ADDED", {"metadata": {"name": "canary", "namespace": "ns"}}
    )
    assert children.get("apps/v1", "Deployment", "ns", "canary") is not None

    watched.record("batch/v1", "Job", "ADDED", job("j", startTime="2026-12-04T00:00:00Z"))
    assert children.get("batch/v1", "Job", "ns", "j")["status"]["startTime"]
    assert asked[1:] == ["/apis/apps/v1/namespaces/ns/deployments/canary"]  # no Job read


def _not_found(asked):
    from kubernetes.client.exceptions import ApiException

    def call(method, path, *args, **kwargs):
        asked.append(path)
        raise ApiException(status=404)

    return call


def test_pods_are_listed_only_once_a_controller_can_have_made_them():
    assert not job_has_started(job("j"))
    assert job_has_started(job("j", startTime="2026-12-04T00:00:00Z"))
    assert job_has_started(job("j", failed=1))
    assert not deployment_has_synced({"metadata": {}, "status": {}})
    assert deployment_has_synced({"status": {"observedGeneration": 1}})


def test_a_copy_not_heard_of_for_max_age_is_read_again(monkeypatch):
    # A deletion while the watch was reconnecting sends no event: the copy of
    # a child that is gone must not be trusted for ever.
    from kubernetes.client.exceptions import ApiException

    watched.record("v1", "Service", "ADDED", {"metadata": {"name": "s", "namespace": "ns"}})
    live = {"metadata": {"name": "s", "namespace": "ns", "uid": "new"}}
    answers = [live, ApiException(status=404)]

    def call(method, path, *args, **kwargs):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(children, "_call", call)
    monkeypatch.setattr(watched, "MAX_AGE", -1.0)  # every copy is too old
    assert children.get("v1", "Service", "ns", "s")["metadata"]["uid"] == "new"
    monkeypatch.setattr(watched, "MAX_AGE", 300.0)
    assert (
        watched.get("v1", "Service", "ns", "s")["metadata"]["uid"] == "new"
    )  # the read refreshed it
    monkeypatch.setattr(watched, "MAX_AGE", -1.0)
    assert children.get("v1", "Service", "ns", "s") is None  # gone: the 404 drops the copy
    assert watched.size() == 0 and answers == []


def test_an_applys_answer_is_the_copy_until_the_watch_catches_up(monkeypatch):
    # With a thousand objects arriving at once the watch events lag: the next
    # reconcile would read the child it has just applied from the apiserver.
    asked = []

    def call(method, path, body=None, *args, **kwargs):
        asked.append(method)
        return {**body, "metadata": {**body["metadata"], "uid": "u", "generation": 1}}

    monkeypatch.setattr(children, "_call", call)
    monkeypatch.setattr(children, "_last_applied", {})
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"ports": [{"port": 80}]},
    }
    children.apply(service)
    children.apply(service)  # unchanged: read, from the copy
    assert asked == ["PATCH"]
    assert children.get("v1", "Service", "ns", "web")["metadata"]["uid"] == "u"
