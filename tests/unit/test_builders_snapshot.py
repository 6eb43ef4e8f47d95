"""The snapshot Job the operator creates for a Dataset."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from golden import assert_golden

from flywheel.api.dataset import DatasetSpec
from flywheel.builders.snapshot import build_snapshot_job
from flywheel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "dataset.yaml").read_text())
SETTINGS = Settings(image="flywheel:test", s3_endpoint="http://s3.local:7070")


def dataset(spec=None):
    body = {
        "apiVersion": "mlops.flywheel.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "iris", "namespace": "team-a", "uid": "u-1", "generation": 1},
        "spec": spec or SAMPLE["spec"],
    }
    return body, DatasetSpec.model_validate(body["spec"])


def test_snapshot_job_matches_golden():
    body, spec = dataset()
    assert_golden("snapshot-job.yaml", build_snapshot_job(body, spec, 3, SETTINGS))


def test_pod_is_restricted_has_no_api_rights_and_secrets_by_reference():
    body, spec = dataset(
        {
            **SAMPLE["spec"],
            "source": {**SAMPLE["spec"]["source"], "credentials": {"secretName": "s3"}},
        }
    )
    job = build_snapshot_job(body, spec, 1, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    assert DatasetSpec.model_validate(json.loads(env["FLYWHEEL_DATASET_SPEC"]["value"])) == spec
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert job["metadata"]["name"] == "iris-snapshot-1"


def test_long_names_stay_valid_labels():
    body, spec = dataset()
    body["metadata"]["name"] = "d" * 52
    name = build_snapshot_job(body, spec, 12345, SETTINGS)["metadata"]["name"]
    assert (
        len(name) <= 63
        and name == build_snapshot_job(body, spec, 12345, SETTINGS)["metadata"]["name"]
    )
