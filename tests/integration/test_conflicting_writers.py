"""Issue #9, property 4: conflicting writers lose nothing and nothing flaps.

A user edits spec while the operator writes status; a second field manager
applies labels and annotations server-side; a client holding a stale
resourceVersion is refused. The objects are TrainingRuns whose Dataset does
not exist: every generation gets a status write (DatasetNotFound, with the
new observedGeneration) and no children, so the races are between writers
only.
"""

from __future__ import annotations

import threading

import pytest
from chaos_helpers import still
from kube_helpers import RESYNC_SECONDS, wait_for
from kubernetes import client, watch
from training_helpers import orphan_run

from flywheel.api.common import GROUP, VERSION

pytestmark = pytest.mark.integration

RUNS = 8
EDITS = 15


def settled(objects, namespace, name):
    """The status once the operator reported on the object's current generation."""
    got = objects.get(namespace, "TrainingRun", name)
    status = got.get("status") or {}
    return got if status.get("observedGeneration") == got["metadata"]["generation"] else None


def test_spec_edits_racing_status_writes_are_all_kept(operator, objects, namespace, kube_api):
    names = [f"race-{i}" for i in range(RUNS)]
    for name in names:
        objects.create(namespace, orphan_run(name))
    seen = watch_observed_generations(kube_api, namespace)

    def edit(name: str) -> None:
        # Each edit a new spec: the operator is still writing the status of
        # the previous generation when the next one lands.
        for seed in range(1, EDITS + 1):
            objects.patch(namespace, "TrainingRun", name, {"spec": {"trainer": {"seed": seed}}})

    editors = [threading.Thread(target=edit, args=(n,)) for n in names]
    for thread in editors:
        thread.start()
    for thread in editors:
        thread.join()

    for name in names:
        # 120 edits queue up behind the session's other objects on a shared operator.
        got = wait_for(lambda n=name: settled(objects, namespace, n), timeout=180, what=name)
        assert got["spec"]["trainer"]["seed"] == EDITS, "a spec edit was lost"
        assert got["metadata"]["generation"] == 1 + EDITS
        reason = objects.condition(namespace, "TrainingRun", name, "Accepted")["reason"]
        assert reason == "DatasetNotFound"
    pairs = [("TrainingRun", n) for n in names]
    before, after = still(objects, namespace, pairs, 3 * RESYNC_SECONDS)
    assert before == after, "status kept being rewritten after the edits stopped"
    seen.stop()
    for name in names:
        history = seen.generations.get(name, [])
        assert history and history[-1] == 1 + EDITS, f"the watch saw {history}"
        assert history == sorted(history), f"observedGeneration went backwards: {history}"


class watch_observed_generations:
    """observedGeneration of every TrainingRun in `namespace`, in the order a
    watching user (kubectl get -w) sees them."""

    def __init__(self, kube_api, namespace: str):
        self.generations: dict[str, list[int]] = {}
        self._watch = watch.Watch()
        api = client.CustomObjectsApi(kube_api)
        self._stream = self._watch.stream(
            api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "trainingruns",
            timeout_seconds=300,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                obj = event["object"]
                observed = (obj.get("status") or {}).get("observedGeneration")
                if observed is not None:
                    self.generations.setdefault(obj["metadata"]["name"], []).append(observed)
        except Exception:  # the stream closes when stopped
            pass

    def stop(self) -> None:
        self._watch.stop()
        self._thread.join(timeout=10)


def test_a_second_field_manager_keeps_its_fields(operator, objects, namespace, kube_api):
    objects.create(namespace, orphan_run("shared"))
    wait_for(lambda: settled(objects, namespace, "shared"), what="the first status")
    api = client.CustomObjectsApi(kube_api)
    platform = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingRun",
        "metadata": {
            "name": "shared",
            "labels": {"team": "platform"},
            "annotations": {"cost-center": "ml-42"},
        },
    }
    # Another controller (say, a policy agent) owns a label and an annotation,
    # applied server-side under its own name while a user edits spec.
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "trainingruns", "shared", platform,
        field_manager="platform-team", force=True,
        _content_type="application/apply-patch+yaml",
    )  # fmt: skip
    objects.patch(namespace, "TrainingRun", "shared", {"spec": {"trainer": {"seed": 3}}})
    got = wait_for(lambda: settled(objects, namespace, "shared"), what="generation 2")

    meta = got["metadata"]
    assert meta["labels"]["team"] == "platform"
    assert meta["annotations"]["cost-center"] == "ml-42"
    assert got["spec"]["trainer"]["seed"] == 3
    managers = {(m["manager"], m.get("subresource", "")) for m in meta["managedFields"]}
    assert ("platform-team", "") in managers, managers
    # The platform team's fields are still theirs alone: nobody took them over.
    owners = [m for m in meta["managedFields"] if "f:team" in str(m.get("fieldsV1"))]
    assert [m["manager"] for m in owners] == ["platform-team"], owners
    before, after = still(objects, namespace, [("TrainingRun", "shared")], 3 * RESYNC_SECONDS)
    assert before == after, "the operator and the second manager fight over the object"


def test_a_stale_resource_version_is_refused_and_the_retry_wins(
    operator, objects, namespace, kube_api
):
    objects.create(namespace, orphan_run("stale"))
    api = client.CustomObjectsApi(kube_api)
    # A user reads the object before the operator has written its status ...
    read = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "trainingruns", "stale")
    wait_for(lambda: settled(objects, namespace, "stale"), what="the operator's status")
    # ... and writes back the copy they edited: the apiserver refuses it.
    read["spec"]["trainer"]["seed"] = 11
    with pytest.raises(client.ApiException) as refused:
        api.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingruns", "stale", read
        )
    assert refused.value.status == 409
    # Read again, edit again, write: kept, and the operator reports on it.
    fresh = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "trainingruns", "stale")
    fresh["spec"]["trainer"]["seed"] = 11
    api.replace_namespaced_custom_object(GROUP, VERSION, namespace, "trainingruns", "stale", fresh)
    got = wait_for(lambda: settled(objects, namespace, "stale"), what="generation 2")
    assert got["metadata"]["generation"] == 2
    assert got["spec"]["trainer"]["seed"] == 11
    assert "status" in got and got["status"]["observedGeneration"] == 2
