"""The operator's MLflow calls (integrations/tracking.py, over MLflow's REST API)
against a real `mlflow server`: one run and one registry version per object,
however often and however concurrently asked; what MLflow's own client then
sees; and errors that say whether MLflow refused or could not be reached."""

from __future__ import annotations

import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from flywheel.integrations import mlflow_rest, tracking
from flywheel.integrations.mlflow_rest import MlflowError, MlflowRest


@pytest.fixture
def uri(mlflow_server) -> str:
    return mlflow_server.tracking_uri


@pytest.fixture
def name() -> str:
    """A fresh experiment or model name: the server is shared by the session."""
    return f"tracking-{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def restarted_operator(monkeypatch):
    monkeypatch.setattr(tracking, "_experiment_ids", {})
    monkeypatch.setattr(tracking, "_aliases_seen", {})


def runs_of(mlflow_server, experiment: str) -> list[str]:
    client = mlflow_server.client()
    found = client.get_experiment_by_name(experiment)
    return [r.info.run_id for r in client.search_runs([found.experiment_id])] if found else []


def ensure(uri: str, experiment: str, uid: str) -> str:
    return tracking.ensure_run(uri, experiment, uid=uid, name="r", tags={"t": "v"})


def test_a_new_experiment_gets_one_run_and_asking_again_finds_it(mlflow_server, uri, name):
    first = ensure(uri, name, "uid-1/v1")
    assert ensure(uri, name, "uid-1/v1") == first
    assert runs_of(mlflow_server, name) == [first]
    run = mlflow_server.client().get_run(first)
    assert run.data.tags[tracking.UID_TAG] == "uid-1/v1" and run.data.tags["t"] == "v"
    assert run.info.run_name == "r" and run.info.status == "RUNNING"
    assert run.info.user_id == tracking.RUN_USER


def test_objects_sharing_an_experiment_get_a_run_each(mlflow_server, uri, name):
    a = ensure(uri, name, "uid-a/v1")
    b = ensure(uri, name, "uid-b/v1")
    assert a != b and sorted(runs_of(mlflow_server, name)) == sorted([a, b])
    assert ensure(uri, name, "uid-a/v1") == a


def test_sixteen_threads_asking_at_once_share_one_experiment(mlflow_server, uri, name):
    # Handler threads asking at once, one pooled client.
    with ThreadPoolExecutor(16) as pool:
        made = list(pool.map(lambda i: ensure(uri, name, f"uid-{i % 4}/v1"), range(16)))
    assert len(set(made)) >= 4
    for i in range(4):  # afterwards each object finds one run, the same every time
        assert ensure(uri, name, f"uid-{i}/v1") == ensure(uri, name, f"uid-{i}/v1")


def test_losing_the_race_to_create_the_experiment_still_finds_the_run(
    mlflow_server, uri, name, monkeypatch
):
    # Another reconcile created the experiment and this object's run between
    # our lookup and our create: the create fails, and the run is found.
    made = ensure(uri, name, "uid-1/v1")
    monkeypatch.setattr(tracking, "_experiment_ids", {})  # as a restarted operator
    real = tracking.experiment_id_by_name
    calls = []

    def not_there_yet(tracking_uri, experiment):
        calls.append(experiment)
        return None if len(calls) == 1 else real(tracking_uri, experiment)

    monkeypatch.setattr(tracking, "experiment_id_by_name", not_there_yet)
    assert ensure(uri, name, "uid-1/v1") == made
    assert len(calls) == 2 and runs_of(mlflow_server, name) == [made]


def test_runs_of_one_experiment_look_it_up_once(mlflow_server, uri, name, monkeypatch):
    ensure(uri, name, "uid-1/v1")
    lookups = []
    real = tracking.experiment_id_by_name
    monkeypatch.setattr(
        tracking,
        "experiment_id_by_name",
        lambda tracking_uri, experiment: lookups.append(experiment) or real(uri, experiment),
    )
    second = ensure(uri, name, "uid-2/v1")
    assert lookups == []
    assert len(runs_of(mlflow_server, name)) == 2
    # A deleted experiment: the run cannot be made, the error says so, and the
    # next attempt looks the experiment up again instead of trusting the id.
    client = mlflow_server.client()
    client.delete_experiment(client.get_run(second).info.experiment_id)
    with pytest.raises(MlflowError, match="(?i)active|deleted") as caught:
        ensure(uri, name, "uid-3/v1")
    assert tracking.refused(caught.value)
    with pytest.raises(MlflowError, match="(?i)active|deleted"):
        ensure(uri, name, "uid-3/v1")
    assert lookups == [name]


def test_a_failed_job_marks_its_run_failed_and_reads_its_metrics(mlflow_server, uri, name):
    run_id = ensure(uri, name, "uid-1/v1")
    client = mlflow_server.client()
    client.log_metric(run_id, "accuracy", 0.93)
    client.log_metric(run_id, "loss", float("nan"))
    client.log_param(run_id, "n_estimators", "50")
    tracking.fail_run(uri, run_id)
    run = tracking.get_run(uri, run_id)
    assert run.status == "FAILED" and client.get_run(run_id).info.status == "FAILED"
    assert run.metrics["accuracy"] == 0.93 and run.metrics["loss"] != run.metrics["loss"]  # NaN
    assert run.params == {"n_estimators": "50"} and run.tags[tracking.UID_TAG] == "uid-1/v1"
    assert tracking.run_url(uri, run) == f"{uri}/#/experiments/{run.experiment_id}/runs/{run_id}"
    tracking.fail_run(uri, run_id)  # already over: left as it is
    assert client.get_run(run_id).info.end_time is not None


@pytest.fixture
def logged_model(mlflow_server, name):
    """A run that logged an iris classifier under the name `model`, as the
    training workload does: (run id, the logged model's id)."""
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_experiment(name)
    x, y = load_iris(return_X_y=True, as_frame=True)
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", 0.97)
        info = mlflow.sklearn.log_model(LogisticRegression(max_iter=500).fit(x, y), name="model")
    mlflow.set_tracking_uri(None)
    return run.info.run_id, info.model_id


def test_a_model_version_is_registered_once_as_mlflow_register_model_would(
    mlflow_server, uri, name, logged_model
):
    run_id, model_id = logged_model
    source = f"runs:/{run_id}/model"
    tags = {"flywheel.modelversion": "ns/mv"}
    first = tracking.ensure_model_version(uri, name, source, run_id, "uid-1", tags)
    again = tracking.ensure_model_version(uri, name, source, run_id, "uid-1", tags)
    assert (first.version, again.version) == ("1", "1")
    # The runs:/ source resolved to the LoggedModel, so the version loads.
    assert first.source == f"models:/{model_id}"
    seen = mlflow_server.client().get_model_version(name, "1")
    assert seen.source == first.source and seen.tags[tracking.UID_TAG] == "uid-1"
    assert seen.run_id == run_id and seen.tags["flywheel.modelversion"] == "ns/mv"
    mlflow.set_tracking_uri(uri)
    try:
        by_mlflow = mlflow.register_model(source, f"{name}-reference")
    finally:
        mlflow.set_tracking_uri(None)
    assert by_mlflow.source == first.source
    # Another object naming the same run gets a version of its own.
    other = tracking.ensure_model_version(uri, name, source, run_id, "uid-2", tags)
    assert other.version == "2"


def test_aliases_point_at_versions_and_carry_their_runs_metrics(
    mlflow_server, uri, name, logged_model
):
    run_id, _ = logged_model
    version = tracking.ensure_model_version(uri, name, f"runs:/{run_id}/model", run_id, "u", {})
    assert tracking.metrics_of_alias(uri, name, "production") is None
    assert tracking.metrics_of_alias(uri, f"{name}-no-such-model", "production") is None
    tracking.set_alias(uri, name, "candidate", version.version)
    assert tracking.move_alias(uri, name, "production", version.version) is True
    assert tracking.move_alias(uri, name, "production", version.version) is False  # there
    assert tracking.aliases_of(uri, name, version.version) == ["candidate", "production"]
    assert tracking.metrics_of_alias(uri, name, "production") == {"accuracy": 0.97}
    assert mlflow_server.client().get_model_version_by_alias(name, "production").version == "1"
    tracking.delete_model_version(uri, name, version.version)
    assert tracking.search_model_versions(uri, f"name = '{name}'") == []
    with pytest.raises(MlflowError, match="RESOURCE_DOES_NOT_EXIST"):
        tracking.delete_model_version(uri, name, version.version)


def test_an_alias_just_seen_is_not_asked_for_again(
    mlflow_server, uri, name, logged_model, monkeypatch
):
    """1,000 InferenceServices serving one version: one read, not 1,000."""
    run_id, _ = logged_model
    source = f"runs:/{run_id}/model"
    first = tracking.ensure_model_version(uri, name, source, run_id, "u1", {}).version
    second = tracking.ensure_model_version(uri, name, source, run_id, "u2", {}).version
    reads = []
    real = MlflowRest.get

    def counted(self, path, **query):
        if path == "registered-models/alias":
            reads.append(query["alias"])
        return real(self, path, **query)

    monkeypatch.setattr(MlflowRest, "get", counted)
    assert tracking.move_alias(uri, name, "production", first) is True

    def move_to_first(_):
        return tracking.move_alias(uri, name, "production", first)

    with ThreadPoolExecutor(16) as pool:
        again = list(pool.map(move_to_first, range(50)))
    assert again == [False] * 50
    assert reads == ["production"], "the alias was set here a moment ago"
    # Another version wanted: asked, and moved.
    assert tracking.move_alias(uri, name, "production", second) is True
    assert mlflow_server.client().get_model_version_by_alias(name, "production").version == second
    # Someone else moves it back; once the answer is old, it is asked again.
    mlflow_server.client().set_registered_model_alias(name, "production", first)
    monkeypatch.setattr(tracking, "ALIAS_SEEN_SECONDS", 0.0)
    assert tracking.move_alias(uri, name, "production", second) is True
    assert mlflow_server.client().get_model_version_by_alias(name, "production").version == second
    assert reads == ["production"] * 3


def test_two_versions_of_a_new_model_registering_at_once_both_register(
    mlflow_server, uri, name, monkeypatch
):
    # Seen with the wake-ups: a TrainingRun's own ModelVersion and another one
    # naming the same run registered in the same second. The one that lost
    # the race to create the registered model was marked Failed
    # ("RegistrationRefused: RESOURCE_ALREADY_EXISTS").
    client = mlflow_server.client()
    run_id = client.create_run(client.create_experiment(name)).info.run_id
    first = tracking.ensure_model_version(uri, name, "s3://b/m", run_id, "uid-1", {})
    real = MlflowRest.get
    calls = []

    def not_there_yet(self, path, **query):
        if path == "registered-models/get":
            calls.append(path)
            if len(calls) == 1:  # what the loser saw just before the winner created it
                raise MlflowError("RESOURCE_DOES_NOT_EXIST: no model", "RESOURCE_DOES_NOT_EXIST")
        return real(self, path, **query)

    monkeypatch.setattr(MlflowRest, "get", not_there_yet)
    second = tracking.ensure_model_version(uri, name, "s3://b/m", run_id, "uid-2", {})
    assert calls and {first.version, second.version} == {"1", "2"}


def test_errors_say_whether_mlflow_refused_or_could_not_be_reached(
    mlflow_server, uri, object_store
):
    with pytest.raises(MlflowError) as refused:
        tracking.get_run(uri, "0" * 32)
    assert refused.value.error_code == "RESOURCE_DOES_NOT_EXIST" and tracking.refused(refused.value)
    assert str(refused.value).startswith("RESOURCE_DOES_NOT_EXIST: ")

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(MlflowError, match=f"cannot reach {closed}/api/2.0/mlflow/runs/get") as down:
        tracking.get_run(closed, "0" * 32)
    assert "refused" in str(down.value).lower() and not tracking.refused(down.value)

    # Not an MLflow server (here the object store): an answer, but not a refusal.
    with pytest.raises(MlflowError, match=r"HTTP \d{3} from ") as other:
        tracking.get_run(object_store.endpoint_url, "0" * 32)
    assert not tracking.refused(other.value)

    with pytest.raises(MlflowError, match="set it to the server's http"):
        mlflow_rest.rest("sqlite:///mlflow.db")
