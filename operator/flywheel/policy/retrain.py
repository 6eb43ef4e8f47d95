"""Whether a drift verdict starts a retraining run, by the InferenceService's policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..api.common import parse_duration
from ..api.inferenceservice import Retrain
from ..api.stamps import parse_stamp


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str


def decide_retrain(
    policy: Retrain,
    drift: Mapping[str, Any],
    retrain: Mapping[str, Any],
    in_flight: int,
    now: datetime,
) -> RetrainDecision:
    """One decision per drift check (its Job): the caller records the Job it
    answered, so a check is never acted on twice."""
    if drift.get("result") != "Drift":
        return RetrainDecision(False, f"last check: {drift.get('result')}; nothing to do")
    if not policy.enabled:
        return RetrainDecision(False, "drift detected; retraining is disabled (retrain.enabled)")
    needed = policy.require_consecutive_detections
    seen = drift.get("consecutiveDetections") or 0
    if seen < needed:
        return RetrainDecision(
            False, f"drift detected {seen} time(s) in a row; retraining needs {needed}"
        )
    if in_flight >= policy.max_in_flight:
        return RetrainDecision(
            False, f"drift detected; {in_flight} retrain(s) still running (maxInFlight)"
        )
    last = retrain.get("lastTime")
    if last:
        since = now - parse_stamp(str(last))
        cooldown = parse_duration(policy.cooldown)
        if since < cooldown:
            left = int((cooldown - since).total_seconds())
            return RetrainDecision(
                False, f"drift detected; in cooldown for {left}s more (retrain.cooldown)"
            )
    return RetrainDecision(True, f"drift detected {seen} time(s) in a row: retraining")
