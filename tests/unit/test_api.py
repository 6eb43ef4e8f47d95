"""The pydantic models: samples parse and round-trip; bad specs name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from flywheel.api.kinds import BY_KIND
from flywheel.controllers.reconcile import describe_validation_error

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
INVALID = yaml.safe_load((ROOT / "tests" / "data" / "invalid_objects.yaml").read_text())


def sample_objects():
    return [
        pytest.param(doc, id=path.stem)
        for path in SAMPLES
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") in BY_KIND
    ]


def test_every_kind_has_a_sample():
    kinds = {p.values[0]["kind"] for p in sample_objects()}
    assert kinds == set(BY_KIND)


@pytest.mark.parametrize("obj", sample_objects())
def test_sample_round_trips(obj):
    model = BY_KIND[obj["kind"]].spec
    spec = model.model_validate(obj["spec"])
    wire = spec.to_wire()
    # What the operator would write back parses to the same model, and every
    # field the user wrote survives with its value (defaults may be added).
    assert model.model_validate(wire) == spec
    assert _contains(wire, obj["spec"])


def _contains(big, small) -> bool:
    if isinstance(small, dict):
        return all(k in big and _contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return len(big) == len(small) and all(map(_contains, big, small))
    return big == small


@pytest.mark.parametrize(
    "case",
    [c for c in INVALID if not c.get("admissionOnly")],
    ids=lambda c: c["name"],
)
def test_invalid_spec_is_refused_naming_the_field(case):
    model = BY_KIND[case["object"]["kind"]].spec
    with pytest.raises(ValidationError) as caught:
        model.model_validate(case["object"]["spec"])
    message = describe_validation_error(caught.value)
    assert case.get("says", case["field"]) in message, message


def test_status_models_accept_fields_from_a_newer_operator():
    status = BY_KIND["Dataset"].status.model_validate(
        {"phase": "Ready", "rows": 150, "addedLater": {"x": 1}}
    )
    assert status.rows == 150
