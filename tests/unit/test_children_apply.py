"""children.apply sends a write only when the body or the child changed.

An in-memory stand-in for the apiserver's apply/get (the integration test
test_inference_services.py::test_converged_service_sends_no_writes counts the
real apiserver's requests)."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
from kubernetes.client.exceptions import ApiException

from flywheel.integrations import children, watched


class FakeApiserver:
    """Objects by path; apply bumps generation only when the spec changes."""

    def __init__(self, generations: bool = True) -> None:
        self.generations = generations  # Services and HPAs have none
        self.objects: dict[str, dict] = {}
        self.requests: Counter = Counter()
        self.version = 0

    def call(self, method, path, body=None, query=None, content=None):
        self.requests[method] += 1
        if method == "GET":
            if path not in self.objects:
                raise ApiException(status=404, reason="Not Found")
            return copy.deepcopy(self.objects[path])
        assert method == "PATCH" and content == "application/apply-patch+yaml"
        live = self.objects.get(path)
        if live is None or live["spec"] != body["spec"]:
            generation = (live or {"metadata": {}})["metadata"].get("generation", 0) + 1
            live = {**copy.deepcopy(body), "status": {}}
            live["metadata"] = {**live["metadata"], "generation": generation, "uid": "u-1"}
            if not self.generations:
                del live["metadata"]["generation"]
        live["metadata"]["labels"] = dict(body["metadata"].get("labels") or {})
        self.bump(live)
        self.objects[path] = live
        return copy.deepcopy(live)

    def bump(self, live: dict) -> None:
        self.version += 1
        live["metadata"]["resourceVersion"] = str(self.version)

    def edit(self, path: str, change) -> None:
        change(self.objects[path])
        self.bump(self.objects[path])


PATH = "/apis/apps/v1/namespaces/ns/deployments/web"


def deployment(image: str = "flywheel:1", owner: str = "owner-1") -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "labels": {"app": "web"},
            "ownerReferences": [{"uid": owner}],
        },
        "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
    }


@pytest.fixture(autouse=True)
def no_watch(monkeypatch):
    """No watch runs here to bring others' edits: every read asks the fake
    (integrations/watched.py keeps no copy)."""
    monkeypatch.setattr(watched, "MAX_AGE", -1.0)
    watched.clear()


@pytest.fixture
def server(monkeypatch):
    fake = FakeApiserver()
    monkeypatch.setattr(children, "_call", fake.call)
    monkeypatch.setattr(children, "_last_applied", {})
    return fake


def test_the_same_body_again_is_a_read_not_a_write(server):
    children.apply(deployment())
    live = children.apply(deployment())
    assert server.requests == Counter({"PATCH": 1, "GET": 1})
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "flywheel:1"


def test_a_changed_body_is_applied(server):
    children.apply(deployment())
    children.apply(deployment(image="flywheel:2"))
    assert server.requests["PATCH"] == 2
    assert server.objects[PATH]["metadata"]["generation"] == 2


def test_status_changes_do_not_cause_writes(server):
    children.apply(deployment())
    server.edit(PATH, lambda d: d["status"].update(readyReplicas=3))
    live = children.apply(deployment())
    assert server.requests["PATCH"] == 1
    assert live["status"]["readyReplicas"] == 3, "the answer is the child as it is now"


def test_someone_elses_spec_edit_is_put_back(server):
    children.apply(deployment())

    def kubectl_edit(d):
        d["spec"] = {"template": {"spec": {"containers": [{"image": "evil:1"}]}}}
        d["metadata"]["generation"] += 1

    server.edit(PATH, kubectl_edit)
    live = children.apply(deployment())
    assert server.requests["PATCH"] == 2
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "flywheel:1"


def test_a_label_we_set_that_was_changed_is_put_back(server):
    children.apply(deployment())
    server.edit(PATH, lambda d: d["metadata"]["labels"].update(app="other"))
    live = children.apply(deployment())
    assert server.requests["PATCH"] == 2
    assert live["metadata"]["labels"]["app"] == "web"


def test_a_label_someone_else_added_is_left_alone(server):
    children.apply(deployment())
    server.edit(PATH, lambda d: d["metadata"]["labels"].update(team="ml"))
    children.apply(deployment())
    assert server.requests["PATCH"] == 1


def test_a_deleted_child_is_created_again(server):
    children.apply(deployment())
    del server.objects[PATH]
    children.apply(deployment())
    assert server.requests["PATCH"] == 2 and PATH in server.objects


def test_forgetting_an_owner_applies_its_children_again(server):
    children.apply(deployment(owner="owner-1"))
    children.forget_owned_by("someone-else")
    children.apply(deployment(owner="owner-1"))
    assert server.requests["PATCH"] == 1
    children.forget_owned_by("owner-1")
    children.apply(deployment(owner="owner-1"))
    assert server.requests["PATCH"] == 2


@pytest.fixture
def server_without_generations(monkeypatch):
    fake = FakeApiserver(generations=False)
    monkeypatch.setattr(children, "_call", fake.call)
    monkeypatch.setattr(children, "_last_applied", {})
    return fake


def test_kinds_without_a_generation_are_compared_by_the_fields_we_sent(server_without_generations):
    server = server_without_generations
    children.apply(deployment())
    # An HPA's status moves its resourceVersion every few seconds: no write.
    server.edit(PATH, lambda d: d["status"].update(currentReplicas=2))
    # Fields the apiserver defaults (or others own) are not ours to compare.
    server.edit(PATH, lambda d: d["spec"]["template"]["spec"].update(restartPolicy="Always"))
    children.apply(deployment())
    assert server.requests["PATCH"] == 1
    # A field we set, changed by someone else, is put back.
    server.edit(PATH, lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="x"))
    live = children.apply(deployment())
    assert server.requests["PATCH"] == 2
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "flywheel:1"
