"""The generated CRDs on a real apiserver: installed, explained, and enforcing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kube_helpers import wait_for
from kubernetes.client.exceptions import ApiException

from flywheel.api.kinds import KINDS

ROOT = Path(__file__).resolve().parents[2]
INVALID = yaml.safe_load((ROOT / "tests" / "data" / "invalid_objects.yaml").read_text())

pytestmark = pytest.mark.integration


def test_crds_are_established_with_names_and_category(control_plane, crds):
    for kind in KINDS:
        crd = control_plane.kubectl("get", "crd", kind.crd_name, "-o", "yaml").stdout
        crd = yaml.safe_load(crd)
        established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert established["Established"] == "True"
        assert established["NamesAccepted"] == "True"
        assert crd["status"]["acceptedNames"]["shortNames"] == list(kind.short_names)
    # `kubectl get flywheel` lists all four kinds at once, once discovery
    # (refreshed by the apiserver a few seconds after Established) has them.
    wait_for(
        lambda: control_plane.kubectl("get", "flywheel", "-A", check=False).returncode == 0,
        what="the flywheel category in discovery",
    )


def test_kubectl_explain_shows_the_model_descriptions(control_plane, crds):
    out = control_plane.kubectl("explain", "trainingrun.spec.trainer.estimator").stdout
    assert "Import path of an estimator class" in out
    out = control_plane.kubectl("explain", "fwis.spec.canary.analysis").stdout
    assert "stepPercent" in out and "Traffic added per step" in out


def test_every_sample_is_accepted(control_plane, crds, namespace):
    out = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-k", str(ROOT / "manifests" / "samples")
    ).stdout
    for kind in KINDS:
        assert f"{kind.singular}.{kind.crd_name.split('.', 1)[1]}/" in out, out


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c["name"])
def test_invalid_object_is_rejected_naming_the_field(objects, namespace, case):
    obj = {"metadata": {"name": "bad"}, **case["object"]}
    with pytest.raises(ApiException) as caught:
        objects.create(namespace, obj)
    assert caught.value.status == 422, caught.value.body
    message = caught.value.body
    assert case["field"] in message, message
    if "says" in case:
        assert case["says"] in message, message
