"""kopf's record of the handled spec, kept in status (controllers/diffbase.py)."""

from __future__ import annotations

import json

import kopf

from flywheel.controllers.diffbase import StatusDiffBase
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
