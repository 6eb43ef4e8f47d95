"""The drift CronJob and the TrainingRun a detection starts."""

from __future__ import annotations

from pathlib import Path

import yaml
from golden import assert_golden

from flywheel.api.dataset import DatasetSpec
from flywheel.api.inferenceservice import InferenceServiceSpec
from flywheel.api.trainingrun import TrainingRunSpec
from flywheel.builders.drift import build_drift_cronjob
from flywheel.builders.retrain import build_retrain_run, retrain_run_name
from flywheel.settings import Settings

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
SERVICE = yaml.safe_load((SAMPLES / "inferenceservice.yaml").read_text())
DATASET = DatasetSpec.model_validate(yaml.safe_load((SAMPLES / "dataset.yaml").read_text())["spec"])
RUN = yaml.safe_load((SAMPLES / "trainingrun.yaml").read_text())
SETTINGS = Settings(
    image="flywheel:test", s3_endpoint="http://s3:7070", mlflow_tracking_uri="http://mlflow:5000"
)


def body(kind, raw, name="iris"):
    return {
        "apiVersion": "mlops.flywheel.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "team-a", "uid": "u-9"},
        "spec": raw,
    }


def test_drift_cronjob_matches_golden():
    spec = InferenceServiceSpec.model_validate(SERVICE["spec"])
    cronjob = build_drift_cronjob(
        body("InferenceService", SERVICE["spec"]), spec, DATASET, "ab" * 32, SETTINGS
    )
    assert_golden("drift-cronjob.yaml", cronjob)


def test_drift_pod_has_no_api_rights_and_one_report_folder_per_check():
    spec = InferenceServiceSpec.model_validate(SERVICE["spec"])
    cronjob = build_drift_cronjob(
        body("InferenceService", SERVICE["spec"]), spec, DATASET, None, SETTINGS
    )
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["FLYWHEEL_CURRENT_URI"] == "s3://flywheel-artifacts/inference-logs/team-a/iris"
    assert env["FLYWHEEL_REPORT_URI"].endswith("/drift/team-a/iris/$(POD_NAME)")
    assert env["FLYWHEEL_REFERENCE_URI"] == DATASET.source.uri
    assert env["FLYWHEEL_TARGET_COLUMN"] == "species"


def test_retrain_run_clones_the_source_on_the_newest_data():
    raw = {**RUN["spec"], "datasetRef": {"name": "iris", "version": "0123456789ab"}}
    raw["trigger"] = "once"
    source = body("TrainingRun", raw, name="iris-rf")
    run = build_retrain_run(
        body("InferenceService", SERVICE["spec"]), source, "iris-drift-29", "drift"
    )
    assert run["metadata"]["name"] == retrain_run_name("iris", "iris-drift-29")
    assert (
        run["metadata"]["name"]
        == build_retrain_run(
            body("InferenceService", SERVICE["spec"]), source, "iris-drift-29", "again"
        )["metadata"]["name"]
    )  # one run per detection, however often it is asked
    assert run["metadata"]["name"] != retrain_run_name("iris", "iris-drift-30")
    assert run["spec"]["datasetRef"] == {"name": "iris", "version": "latest"}
    assert run["metadata"]["labels"]["mlops.flywheel.dev/retrain-of"] == "iris-rf"
    assert run["metadata"]["annotations"]["mlops.flywheel.dev/drift-check"] == "iris-drift-29"
    assert run["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"
    TrainingRunSpec.model_validate(run["spec"])  # a valid TrainingRun
