"""The shared reconcile, called as kopf would call it (Events captured)."""

from __future__ import annotations

import kopf
import pytest

from flywheel.api.conditions import FALSE, ConditionUpdate
from flywheel.api.kinds import DATASET, TRAINING_RUN
from flywheel.controllers import trainingruns
from flywheel.controllers.reconcile import Assessment, accepted, reconcile


def waiting(spec, body) -> Assessment:
    return Assessment("Pending", [accepted(), ConditionUpdate("Ready", FALSE, "Waiting", "w")])


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
