"""ArgoCD's health checks for the four kinds, run as ArgoCD runs them: the Lua
from manifests/argocd/argocd-cm-health.yaml in a Lua 5.1 runtime (ArgoCD's
gopher-lua is 5.1) with the object as the global `obj`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lupa import lua51

HEALTH = Path(__file__).resolve().parents[2] / "manifests" / "argocd" / "argocd-cm-health.yaml"
SCRIPTS = yaml.safe_load(HEALTH.read_text())["data"]
KEY = "resource.customizations.health.mlops.flywheel.dev_{}"


def health(kind: str, status: dict | None, generation: int = 2) -> tuple[str, str]:
    lua = lua51.LuaRuntime()
    obj = {"kind": kind, "metadata": {"name": "x", "generation": generation}}
    if status is not None:
        obj["status"] = status
    # ArgoCD hands the script the object as a Lua table (lists 1-based).
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPTS[KEY.format(kind)])
    return result["status"], result["message"]


def status(phase, ready=None, reason="R", message="m", accepted="True", generation=2):
    conditions = [{"type": "Accepted", "status": accepted, "reason": "A", "message": "accepted?"}]
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready, "reason": reason, "message": message})
    return {"phase": phase, "observedGeneration": generation, "conditions": conditions}


@pytest.mark.parametrize(
    ("kind", "state", "expected"),
    [
        ("Dataset", status("Snapshotting", "False", "Snapshotting"), "Progressing"),
        ("Dataset", status("Ready", "True", "Validated"), "Healthy"),
        ("Dataset", status("Failed", "False", "ValidationFailed"), "Degraded"),
        ("TrainingRun", status("Running", "False", "Training"), "Progressing"),
        ("TrainingRun", status("Succeeded", "True", "ModelVersionCreated"), "Healthy"),
        ("TrainingRun", status("Succeeded", "False", "GateFailed"), "Degraded"),
        ("TrainingRun", status("Failed", "False", "OOMKilled"), "Degraded"),
        ("ModelVersion", status("Pending", "False", "WaitingForTraining"), "Progressing"),
        ("ModelVersion", status("Registered", "False", "AwaitingApproval"), "Suspended"),
        ("ModelVersion", status("Servable", "True", "Servable"), "Healthy"),
        ("ModelVersion", status("Failed", "False", "RegistrationRefused"), "Degraded"),
        ("InferenceService", status("Pending", "False", "ModelNotServable"), "Progressing"),
        ("InferenceService", status("Progressing", "True", "CanaryAnalysis"), "Progressing"),
        ("InferenceService", status("Ready", "True", "Promoted"), "Healthy"),
        ("InferenceService", status("Degraded", "False", "NoReadyReplicas"), "Degraded"),
        ("InferenceService", status("Failed", "False", "GatewayAPIMissing"), "Degraded"),
    ],
)
def test_health_by_state(kind, state, expected):
    got, message = health(kind, state)
    assert got == expected
    assert message == "m"  # the Ready condition's message, for the person looking


@pytest.mark.parametrize("kind", ["Dataset", "TrainingRun", "ModelVersion", "InferenceService"])
def test_not_yet_observed_is_progressing_and_refused_spec_is_degraded(kind):
    assert health(kind, None)[0] == "Progressing"
    assert health(kind, status("Ready", "True", generation=1))[0] == "Progressing"  # stale
    refused = status("Pending", "False", accepted="False")
    assert health(kind, refused) == ("Degraded", "accepted?")


def test_every_kind_has_a_check():
    assert set(SCRIPTS) == {
        KEY.format(k) for k in ("Dataset", "TrainingRun", "ModelVersion", "InferenceService")
    }
