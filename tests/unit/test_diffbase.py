"""kopf's record of the handled spec, kept in status (controllers/diffbase.py)."""

from __future__ import annotations

import json

import kopf

from flywheel.api.common import GROUP
from flywheel.controllers.diffbase import KEY, LEGACY_KEY, StatusDiffBase
from flywheel.controllers.startup import configure

LEGACY = "mlops.flywheel.dev/last-handled-configuration"


def body(spec=None, annotations=None, status=None) -> kopf.Body:
    raw = {
        "apiVersion": "mlops.flywheel.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "run", "namespace": "ml", "annotations": annotations or {}},
        "spec": spec or {"datasetRef": {"name": "iris"}},
        "status": status or {},
    }
    return kopf.Body(raw)


def test_the_operator_keeps_kopfs_records_in_status():
    settings = kopf.OperatorSettings()
    configure(settings=settings)
    assert isinstance(settings.persistence.diffbase_storage, StatusDiffBase)
    assert isinstance(settings.persistence.progress_storage, kopf.StatusProgressStorage)


def test_the_record_is_stored_in_status_alone_so_one_status_patch_carries_it():
    storage, new = StatusDiffBase(), body()
    patch = kopf.Patch()
    storage.store(body=new, patch=patch, essence=storage.build(body=new))
    assert set(patch) == {"status"}
    stored = json.loads(patch["status"]["flywheel"]["last-handled-configuration"])
    assert stored == {"spec": {"datasetRef": {"name": "iris"}}}


def test_the_record_is_read_back_and_an_unchanged_spec_is_no_change():
    storage, new = StatusDiffBase(), body()
    patch = kopf.Patch()
    storage.store(body=new, patch=patch, essence=storage.build(body=new))
    handled = body(status=dict(patch["status"]))
    assert storage.fetch(body=handled) == storage.build(body=handled)
    edited = body(spec={"datasetRef": {"name": "wine"}}, status=dict(patch["status"]))
    assert storage.fetch(body=edited) != storage.build(body=edited)


def test_an_older_operators_annotation_is_read_until_the_next_change_drops_it():
    storage = StatusDiffBase()
    essence = storage.build(body=body())
    recorded = json.dumps(essence, separators=(",", ":")) + "\n"
    legacy = body(annotations={LEGACY: recorded, "mlops.flywheel.dev/kopf-managed": "yes"})
    # The annotation is no part of what is compared: the old object is unchanged.
    assert storage.fetch(body=legacy) == essence == storage.build(body=legacy)

    patch = kopf.Patch()
    storage.store(body=legacy, patch=patch, essence=essence)
    assert patch["metadata"]["annotations"] == {LEGACY: None}
    assert json.loads(patch["status"]["flywheel"]["last-handled-configuration"]) == essence


def test_status_wins_over_a_stale_annotation():
    storage = StatusDiffBase()
    old = {"spec": {"datasetRef": {"name": "old"}}}
    new = {"spec": {"datasetRef": {"name": "new"}}}
    both = body(
        annotations={LEGACY: json.dumps(old)},
        status={"flywheel": {"last-handled-configuration": json.dumps(new)}},
    )
    assert storage.fetch(body=both) == new


def kopfs_own_build(raw: dict) -> dict:
    """The copy kopf's storages build from the whole body."""
    plain = kopf.MultiDiffBaseStorage(
        [
            kopf.StatusDiffBaseStorage(name=KEY),
            kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key=LEGACY_KEY),
        ]
    )
    return plain.build(body=kopf.Body(raw))


def as_the_watch_sends_it(**metadata) -> dict:
    raw = body(
        spec={"stable": {"modelVersionRef": "iris-1"}, "replicas": 2},
        status={
            "phase": "Ready",
            "conditions": [{"type": "Ready", "status": "True", "message": "2 of 2 ready"}],
            "flywheel": {"last-handled-configuration": '{"spec":{}}'},
        },
    )
    raw = json.loads(json.dumps(dict(raw)))
    raw["metadata"].update(
        uid="6f1c",
        resourceVersion="812",
        generation=3,
        managedFields=[{"manager": "flywheel", "fieldsV1": {"f:status": {"f:phase": {}}}}],
        **metadata,
    )
    return raw


def test_the_record_is_what_kopf_would_build_from_the_whole_body():
    cases = [
        as_the_watch_sends_it(),
        as_the_watch_sends_it(labels={"team": "fraud"}),
        as_the_watch_sends_it(
            labels={"team": "fraud"},
            annotations={
                "note": "canary by hand",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                LEGACY: '{"spec":{}}',
                "mlops.flywheel.dev/kopf-managed": "yes",
            },
        ),
    ]
    del cases[0]["metadata"]["annotations"]
    for raw in cases:
        ours = StatusDiffBase().build(body=kopf.Body(raw))
        assert ours == kopfs_own_build(raw)
        assert "status" not in ours and set(ours.get("metadata", {})) <= {"labels", "annotations"}
    # The labels are compared: an edit of one is a change.
    assert StatusDiffBase().build(body=kopf.Body(cases[1])) != StatusDiffBase().build(
        body=kopf.Body(cases[0])
    )


def test_a_handler_on_a_status_field_still_gets_that_field_in_the_record():
    raw = as_the_watch_sends_it()
    fields = [("status", "phase")]
    ours = StatusDiffBase().build(body=kopf.Body(raw), extra_fields=fields)
    assert ours["status"] == {"phase": "Ready"}
