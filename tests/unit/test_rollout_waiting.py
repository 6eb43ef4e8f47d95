"""A canary whose pods have not started is not judged, and says why it waits."""

from __future__ import annotations

from datetime import UTC, datetime

from flywheel.api.inferenceservice import Analysis
from flywheel.controllers import rollout

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# Step 1 of the analysis of canary iris-v2 under way: its pods are due.
STATUS = {"analysis": {"modelVersion": "iris-v2", "step": 1, "weight": 20, "windowStart": None}}


def waiting(stuck=None):
    return rollout.analyse(
        "uid-1", "team-a", "iris-v2", Analysis(), STATUS,
        canary_ready=False, pod_urls={}, now=NOW, stuck=stuck,
    )  # fmt: skip


def test_a_canary_whose_pods_start_waits_without_a_verdict():
    step = waiting()
    assert step.decision is None and step.event is None
    assert step.analysis["message"] == "waiting for the canary's pods"
    assert step.weight == 20  # the weight asked for stays


def test_a_canary_whose_pods_cannot_start_says_why():
    why = "pod iris-canary-5f cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu"
    step = waiting(stuck=why)
    assert step.decision is None
    assert step.analysis["message"] == f"waiting for the canary's pods: {why}"
    assert step.analysis["windowStart"] is None
