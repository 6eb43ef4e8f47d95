"""Why `flywheel drift-check` could not check, and the exit code of each reason.

Drift, no drift and too little data are results (exit 0); these are failures.
The codes are 40-49 (errors.py holds 1 and 10-29), one per reason, so the
CronJob's podFailurePolicy can tell the retryable ones from the rest:

    code  reason                 retry?
    1     InternalError          no: a bug; the message says where
    40    BadConfig              no: an environment value is malformed
    41    ReferenceUnreachable   yes: the reference store did not answer
    42    BadCredentials         no: a store refused the keys (either side)
    43    ReferenceNotFound      no: no reference objects of the format
    44    CurrentUnreachable     yes: the inference-log store did not answer
    45    UnreadableData         no: an object is not the format it claims
    46    NoCommonFeatures       no: reference and logs share no column
    47    UnknownFeature         no: a requested feature is missing (named)
    48    UnknownStatTest        no: no such test, or not for that column type
    49    ReportUnwritable       yes: the report store refused the write
"""

from __future__ import annotations

from typing import Literal

from .errors import WorkloadError

DriftReason = Literal[
    "InternalError",
    "BadConfig",
    "ReferenceUnreachable",
    "BadCredentials",
    "ReferenceNotFound",
    "CurrentUnreachable",
    "UnreadableData",
    "NoCommonFeatures",
    "UnknownFeature",
    "UnknownStatTest",
    "ReportUnwritable",
]

DRIFT_EXIT_CODES: dict[str, int] = {
    "InternalError": 1,
    "BadConfig": 40,
    "ReferenceUnreachable": 41,
    "BadCredentials": 42,
    "ReferenceNotFound": 43,
    "CurrentUnreachable": 44,
    "UnreadableData": 45,
    "NoCommonFeatures": 46,
    "UnknownFeature": 47,
    "UnknownStatTest": 48,
    "ReportUnwritable": 49,
}

# A retry of the CronJob's pod may succeed; the rest fail the same way again.
RETRYABLE = frozenset({"ReferenceUnreachable", "CurrentUnreachable", "ReportUnwritable"})


class DriftError(Exception):
    """The check cannot run for a reason the operator can act on; ends it."""

    def __init__(self, reason: DriftReason, message: str) -> None:
        super().__init__(message)
        self.reason: DriftReason = reason
        self.message = message


def from_storage(exc: WorkloadError, side: Literal["reference", "current", "report"]) -> DriftError:
    """A storage helper's error (reasons of errors.py) in this command's terms."""
    if exc.reason == "AccessDenied":
        return DriftError("BadCredentials", exc.message)
    if exc.reason == "UnreadableData":
        return DriftError("UnreadableData", exc.message)
    if side == "report":
        return DriftError("ReportUnwritable", exc.message)
    if exc.reason == "NoObjects" and side == "reference":
        return DriftError("ReferenceNotFound", exc.message)
    if exc.reason == "InvalidSpec":
        return DriftError("BadConfig", exc.message)
    if side == "reference":
        return DriftError("ReferenceUnreachable", exc.message)
    return DriftError("CurrentUnreachable", exc.message)
