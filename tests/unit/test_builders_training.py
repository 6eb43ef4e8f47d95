"""The training Job and the ModelVersion a TrainingRun creates."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from golden import assert_golden

from flywheel.api.dataset import DatasetSpec
from flywheel.api.trainingrun import TrainingRunSpec
from flywheel.builders.modelversion import build_model_version
from flywheel.builders.training import build_training_job
from flywheel.policy.training import read_training_outcome
from flywheel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"
RUN = yaml.safe_load((SAMPLES / "trainingrun.yaml").read_text())
DATASET = DatasetSpec.model_validate(yaml.safe_load((SAMPLES / "dataset.yaml").read_text())["spec"])
SETTINGS = Settings(
    image="flywheel:test", s3_endpoint="http://s3:7070", mlflow_tracking_uri="http://mlflow:5000"
)
VERSION = "0123456789abcdef" * 4
RUN_ID = "f" * 32


def body(spec):
    return {
        "apiVersion": "mlops.flywheel.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "iris-rf", "namespace": "team-a", "uid": "u-2"},
        "spec": spec,
    }


def job_for(spec: dict):
    parsed = TrainingRunSpec.model_validate(spec)
    return build_training_job(body(spec), parsed, DATASET, VERSION, RUN_ID, "team-a/iris", SETTINGS)


def env_of(job) -> dict:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_builtin_training_job_matches_golden():
    assert_golden("training-job.yaml", job_for(RUN["spec"]))


def test_own_image_gets_the_mlflow_and_data_environment():
    spec = {
        "datasetRef": {"name": "iris"},
        "container": {"image": "registry.example/train:2", "command": ["python", "train.py"]},
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "token"}}}],
        "scheduling": {"nodeSelector": {"gpu": "a100"}},
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    }
    job = job_for(spec)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(job)
    assert container["image"] == "registry.example/train:2"
    assert container["command"] == ["python", "train.py"]
    assert env["MLFLOW_RUN_ID"]["value"] == RUN_ID
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    assert env["FLYWHEEL_DATASET_VERSION"]["value"] == VERSION
    assert env["FLYWHEEL_TARGET_COLUMN"]["value"] == "species"
    assert env["TOKEN"] == spec["env"][0]  # secrets stay references
    assert "FLYWHEEL_TRAINER" not in env
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["automountServiceAccountToken"] is False


def test_builtin_trainer_settings_travel_as_json():
    trainer = json.loads(env_of(job_for(RUN["spec"]))["FLYWHEEL_TRAINER"]["value"])
    assert trainer["estimator"] == "sklearn.ensemble.RandomForestClassifier"
    assert trainer["hyperparameters"] == {"n_estimators": 50, "max_depth": 4}


def test_model_version_carries_lineage_and_owner():
    spec = TrainingRunSpec.model_validate(RUN["spec"])
    status = {"datasetVersion": VERSION, "mlflowRunId": RUN_ID}
    version = build_model_version(body(RUN["spec"]), spec, status, f"runs:/{RUN_ID}/model")
    assert version["metadata"]["name"] == "iris-rf-01234567"
    assert version["metadata"]["ownerReferences"][0]["kind"] == "TrainingRun"
    lineage = version["spec"]["lineage"]
    assert lineage["datasetVersion"] == VERSION and lineage["mlflowRunId"] == RUN_ID
    assert lineage["parameters"]["n_estimators"] == "50"


def pod(terminated):
    return {
        "metadata": {"creationTimestamp": "t"},
        "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
    }


def failed_job(reason):
    return {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": reason}]}}


def test_outcome_explains_oom_deadline_and_workload_errors():
    oom = read_training_outcome(
        failed_job("BackoffLimitExceeded"), [pod({"exitCode": 137, "reason": "OOMKilled"})]
    )
    assert oom.failure["reason"] == "OOMKilled" and "memory" in oom.failure["message"]
    late = read_training_outcome(
        failed_job("DeadlineExceeded"), [pod({"exitCode": 143, "reason": "Error"})]
    )
    assert late.failure["reason"] == "DeadlineExceeded"
    said = json.dumps(
        {"ok": False, "error": {"reason": "UnknownEstimator", "message": "no module x"}}
    )
    own = read_training_outcome(
        failed_job("BackoffLimitExceeded"), [pod({"exitCode": 3, "message": said})]
    )
    assert (own.failure["reason"], own.failure["message"]) == ("UnknownEstimator", "no module x")
    logs = read_training_outcome(
        failed_job("BackoffLimitExceeded"), [pod({"exitCode": 1, "message": "KeyError: 'x'"})]
    )
    assert logs.failure["logTail"] == "KeyError: 'x'" and logs.failure["exitCode"] == 1
