"""`flywheel dataset-snapshot`: version, validate and profile a Dataset's data.

Runs inside the snapshot Job. One streaming pass over every object computes the
content hash (the dataset version), the validation result and the profile; the
full profile goes to the artifact store, a summary to the termination message.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

import click

from ..api.dataset import DatasetSpec, ValidationResult
from .errors import EXIT_CODES, SnapshotError, parse_model
from .storage import open_store, write_object
from .termination import DEFAULT_PATH, redact, render_termination, report_and_exit, secret_values

log = logging.getLogger("flywheel.snapshot")

# The status keeps this many failures; the profile keeps them all.
MAX_FAILURES = 20


@dataclass
class SnapshotResult:
    version: str
    rows: int
    columns: int
    null_cells: int
    bytes: int
    objects: int
    profile_uri: str
    validation: ValidationResult
    profile: dict[str, Any] = field(repr=False)

    def termination(self) -> dict[str, Any]:
        """The summary the operator reads from the pod's termination message."""
        return {
            "ok": True,
            "version": self.version,
            "rows": self.rows,
            "columns": self.columns,
            "nullCells": self.null_cells,
            "bytes": self.bytes,
            "objects": self.objects,
            "profileUri": self.profile_uri,
            "validation": self.validation.to_wire(),
        }


def take_snapshot(
    spec: DatasetSpec,
    profile_uri: str,
    *,
    default_endpoint: str | None = None,
    http_authorization: str | None = None,
) -> SnapshotResult:
    """Read every object of the Dataset once; write the profile; return the result.

    Raises SnapshotError when the data cannot be read. Credentials for s3://
    come from the standard AWS environment, as boto3 reads them."""
    # pyarrow loads here rather than at import: the `flywheel` command line
    # (and so the operator process) registers this command but never runs it.
    from .scan import scan_source

    check_profile_uri(profile_uri)
    source = spec.source
    store = open_store(
        source.uri,
        endpoint=source.endpoint or default_endpoint,
        region=source.region,
        authorization=http_authorization,
    )
    scanned = scan_source(spec, store)
    write_object(profile_uri, render_profile(scanned.profile), endpoint=default_endpoint)
    log.info("wrote the profile to %s", profile_uri)
    return SnapshotResult(
        version=scanned.version,
        rows=scanned.rows,
        columns=scanned.columns,
        null_cells=scanned.null_cells,
        bytes=scanned.bytes,
        objects=scanned.objects,
        profile_uri=profile_uri,
        validation=ValidationResult(
            passed=not scanned.failures, failures=scanned.failures[:MAX_FAILURES]
        ),
        profile=scanned.profile,
    )


def check_profile_uri(uri: str) -> None:
    if not uri.startswith(("s3://", "file:///")):
        raise SnapshotError(
            "InvalidSpec", f"FLYWHEEL_PROFILE_URI must be s3://bucket/key or file:///path: {uri!r}"
        )


def render_profile(profile: dict[str, Any]) -> bytes:
    return json.dumps(profile, indent=1, allow_nan=False).encode()


# --- the command -----------------------------------------------------------


def parse_spec(text: str | None) -> DatasetSpec:
    return parse_model(text, DatasetSpec, "FLYWHEEL_DATASET_SPEC", "Dataset spec", "spec")


def run_snapshot(
    spec_json: str | None,
    profile_uri: str | None,
    *,
    default_endpoint: str | None = None,
    http_authorization: str | None = None,
) -> tuple[dict[str, Any], int]:
    """The termination message and exit code; never raises."""
    try:
        spec = parse_spec(spec_json)
        if not profile_uri:
            raise SnapshotError("InvalidSpec", "FLYWHEEL_PROFILE_URI is not set")
        result = take_snapshot(
            spec,
            profile_uri,
            default_endpoint=default_endpoint,
            http_authorization=http_authorization,
        )
    except SnapshotError as exc:
        return failed(exc.reason, exc.message), EXIT_CODES[exc.reason]
    except Exception as exc:  # the message must say something even for a bug
        log.error("snapshot failed unexpectedly:\n%s", traceback.format_exc())
        return failed("InternalError", f"{type(exc).__name__}: {exc}"), EXIT_CODES["InternalError"]
    return result.termination(), 0


def failed(reason: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"reason": reason, "message": message}}


class _RedactingFilter(logging.Filter):
    """Exceptions from boto3 or urllib may quote what they were given."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        return True


def configure_logging(secrets: list[str], names: tuple[str, ...] = ("flywheel.snapshot",)) -> None:
    """Log these loggers to stderr with secrets redacted (`flywheel train` shares it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(_RedactingFilter(secrets))
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers = [handler]  # idempotent: the command may run twice in one process
        logger.setLevel(logging.INFO)
        logger.propagate = False


@click.command("dataset-snapshot")
@click.option(
    "--spec", "spec_json", envvar="FLYWHEEL_DATASET_SPEC", help="The Dataset spec as JSON."
)
@click.option(
    "--profile-uri",
    envvar="FLYWHEEL_PROFILE_URI",
    help="Where to write the full profile: s3://bucket/key.json or file:///path.json.",
)
@click.option(
    "--s3-endpoint",
    envvar="FLYWHEEL_S3_ENDPOINT",
    help="S3 endpoint when spec.source.endpoint is unset, and for the profile.",
)
@click.option(
    "--termination-log",
    envvar="FLYWHEEL_TERMINATION_LOG",
    default=DEFAULT_PATH,
    show_default=True,
    help="Where to write the result JSON (the container's termination message).",
)
def dataset_snapshot_command(
    spec_json: str | None, profile_uri: str | None, s3_endpoint: str | None, termination_log: str
) -> None:
    """Version, validate and profile a Dataset's data (runs in the snapshot Job).

    Credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (s3://) or
    HTTP_AUTHORIZATION (https://). Exits 0 when the snapshot ran, whether or not
    validation passed; otherwise with the code of the error reason."""
    from .allocator import bound_arrow_threads, use_system_allocator
    from .without_pandas import pandas_not_importable

    use_system_allocator()  # first: before pyarrow loads
    bound_arrow_threads()
    secrets = secret_values(os.environ)
    configure_logging(secrets)
    with pandas_not_importable():  # pyarrow would import it for nothing: ~0.2 s
        message, code = run_snapshot(
            spec_json,
            profile_uri,
            default_endpoint=s3_endpoint or None,
            http_authorization=os.environ.get("HTTP_AUTHORIZATION") or None,
        )
    text = render_termination(message, secrets)
    report_and_exit(text, termination_log, log, code)
