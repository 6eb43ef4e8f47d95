"""The TrainingRun a drift detection starts: a clone of the run behind the
serving model, on the newest version of its Dataset."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

from ..api.common import API_VERSION, GROUP
from .common import child_name, metadata
from .serving import SERVICE_LABEL

COMPONENT = "retrain"
RETRAIN_OF = f"{GROUP}/retrain-of"
DETECTION = f"{GROUP}/drift-check"


def retrain_run_name(service: str, detection: str) -> str:
    """Deterministic per detection: a restarted operator finds the run it made."""
    digest = hashlib.sha256(detection.encode()).hexdigest()[:8]
    return child_name(service, "retrain", digest)


def build_retrain_run(
    isvc: Mapping[str, Any], source: Mapping[str, Any], detection: str, reason: str
) -> dict[str, Any]:
    service = isvc["metadata"]["name"]
    spec = copy.deepcopy(dict(source["spec"]))
    # Train on whatever the Dataset holds now; a one-off, not a standing trigger.
    spec["datasetRef"] = {"name": spec["datasetRef"]["name"], "version": "latest"}
    spec["trigger"] = "once"
    meta = metadata(isvc, retrain_run_name(service, detection), COMPONENT)
    meta["labels"][SERVICE_LABEL] = service
    meta["labels"][RETRAIN_OF] = source["metadata"]["name"]
    meta["annotations"] = {DETECTION: detection, f"{GROUP}/retrain-reason": reason[:500]}
    return {"apiVersion": API_VERSION, "kind": "TrainingRun", "metadata": meta, "spec": spec}
