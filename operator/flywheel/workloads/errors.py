"""Why a workload could not do its job, in words the operator can act on."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import ValidationError

Reason = Literal[
    "SourceUnreachable",
    "AccessDenied",
    "NoObjects",
    "UnreadableData",
    "InvalidSpec",
    "ProfileUnwritable",
    "InternalError",
    # flywheel train
    "DatasetChanged",
    "UnknownEstimator",
    "InvalidHyperparameters",
    "MetricNotApplicable",
    "InvalidData",
    "TrackingUnavailable",
]

# One exit code per reason, so a Job's podFailurePolicy can tell "retrying will
# not help" (a bad spec, unreadable data) from "the store was down for a moment".
EXIT_CODES: dict[Reason, int] = {
    "InternalError": 1,
    "SourceUnreachable": 10,
    "AccessDenied": 11,
    "NoObjects": 12,
    "UnreadableData": 13,
    "InvalidSpec": 14,
    "ProfileUnwritable": 15,
    # flywheel train: all but TrackingUnavailable fail again on a retry.
    "DatasetChanged": 20,
    "UnknownEstimator": 21,
    "InvalidHyperparameters": 22,
    "MetricNotApplicable": 23,
    "InvalidData": 24,
    "TrackingUnavailable": 25,
}


class WorkloadError(Exception):
    """The workload cannot do its job for a reason the operator can act on; ends it."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message


# The name the dataset snapshot and the storage helpers raise it by.
SnapshotError = WorkloadError


def parse_model(text: str | None, model, variable: str, what: str, path: str):
    """The pydantic `model` in the JSON of environment `variable`, or an
    InvalidSpec error naming the variable or the fields (under `path`)."""
    if not text:
        raise WorkloadError("InvalidSpec", f"{variable} is not set")
    try:
        return model.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise WorkloadError("InvalidSpec", f"{variable} is not JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{path}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]
        )
        raise WorkloadError("InvalidSpec", f"invalid {what}: {problems}") from exc
