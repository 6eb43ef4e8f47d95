"""tracking.ensure_run against a real MLflow tracking store (SQLite, no server):
one run per object, however often and however concurrently it is asked."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from flywheel.integrations import tracking


@pytest.fixture
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def runs_of(uri: str, experiment: str) -> list[str]:
    mlflow = MlflowClient(uri)
    found = mlflow.get_experiment_by_name(experiment)
    return [r.info.run_id for r in mlflow.search_runs([found.experiment_id])] if found else []


def ensure(uri: str, experiment: str, uid: str) -> str:
    return tracking.ensure_run(uri, experiment, uid=uid, name="r", tags={"t": "v"})


def test_a_new_experiment_gets_one_run_and_asking_again_finds_it(tracking_uri):
    first = ensure(tracking_uri, "ns/r", "uid-1/v1")
    assert ensure(tracking_uri, "ns/r", "uid-1/v1") == first
    assert runs_of(tracking_uri, "ns/r") == [first]
    run = MlflowClient(tracking_uri).get_run(first)
    assert run.data.tags[tracking.UID_TAG] == "uid-1/v1" and run.data.tags["t"] == "v"


def test_objects_sharing_an_experiment_get_a_run_each(tracking_uri):
    a = ensure(tracking_uri, "shared", "uid-a/v1")
    b = ensure(tracking_uri, "shared", "uid-b/v1")
    assert a != b and sorted(runs_of(tracking_uri, "shared")) == sorted([a, b])
    assert ensure(tracking_uri, "shared", "uid-a/v1") == a


def test_losing_the_race_to_create_the_experiment_still_finds_the_run(tracking_uri, monkeypatch):
    # Another reconcile created the experiment and this object's run between
    # our lookup and our create: the create fails, and the run is found.
    made = ensure(tracking_uri, "raced", "uid-1/v1")
    monkeypatch.setattr(tracking, "_experiment_ids", {})  # as a restarted operator
    real = MlflowClient.get_experiment_by_name
    calls = []

    def not_there_yet(self, name):
        calls.append(name)
        return None if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", not_there_yet)
    assert ensure(tracking_uri, "raced", "uid-1/v1") == made
    assert runs_of(tracking_uri, "raced") == [made]


def test_runs_of_one_experiment_look_it_up_once(tracking_uri, monkeypatch):
    ensure(tracking_uri, "ns/data", "uid-1/v1")
    lookups = []
    real = MlflowClient.get_experiment_by_name
    monkeypatch.setattr(
        MlflowClient,
        "get_experiment_by_name",
        lambda self, name: lookups.append(name) or real(self, name),
    )
    second = ensure(tracking_uri, "ns/data", "uid-2/v1")
    assert lookups == []
    assert len(runs_of(tracking_uri, "ns/data")) == 2
    lookups.clear()
    # A deleted experiment: the run cannot be made, the error says so, and the
    # next attempt looks the experiment up again instead of trusting the id.
    MlflowClient(tracking_uri).delete_experiment(
        MlflowClient(tracking_uri).get_run(second).info.experiment_id
    )
    with pytest.raises(Exception, match="(?i)active|deleted"):
        ensure(tracking_uri, "ns/data", "uid-3/v1")
    with pytest.raises(Exception, match="(?i)active|deleted"):
        ensure(tracking_uri, "ns/data", "uid-3/v1")
    assert lookups == ["ns/data"]


def test_two_versions_of_a_new_model_registering_at_once_both_register(tracking_uri, monkeypatch):
    # Seen with the wake-ups: a TrainingRun's own ModelVersion and another one
    # naming the same run registered in the same second. The one that lost
    # the race to create the registered model was marked Failed
    # ("RegistrationRefused: RESOURCE_ALREADY_EXISTS").
    mlflow = MlflowClient(tracking_uri)
    run_id = mlflow.create_run(mlflow.create_experiment("e")).info.run_id
    first = tracking.ensure_model_version(tracking_uri, "m", "s3://b/m", run_id, "uid-1", {})
    real = MlflowClient.get_registered_model
    calls = []

    def not_there_yet(self, name):
        calls.append(name)
        if len(calls) == 1:  # what the loser saw just before the winner created it
            from mlflow.exceptions import MlflowException

            raise MlflowException(
                "RESOURCE_DOES_NOT_EXIST: no model m", error_code="RESOURCE_DOES_NOT_EXIST"
            )
        return real(self, name)

    monkeypatch.setattr(MlflowClient, "get_registered_model", not_there_yet)
    second = tracking.ensure_model_version(tracking_uri, "m", "s3://b/m", run_id, "uid-2", {})
    assert calls and {str(first.version), str(second.version)} == {"1", "2"}
