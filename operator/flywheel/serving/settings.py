"""The model server's configuration (the environment contract with the
operator's Deployment), and the errors that stop it from starting.

The server process validates it once, then hands it to its workers as JSON
in FLYWHEEL_SERVE_SETTINGS: they are fresh processes (spawned, not forked)
and must see exactly what the server saw, command-line overrides included.
"""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

WORKER_SETTINGS = "FLYWHEEL_SERVE_SETTINGS"

# The variable behind each setting, for messages that say what to fix.
ENV = {
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "model_uri": "FLYWHEEL_MODEL_URI",
    "model_name": "FLYWHEEL_MODEL_NAME",
    "model_version": "FLYWHEEL_MODEL_VERSION",
    "track": "FLYWHEEL_TRACK",
    "port": "FLYWHEEL_PORT",
    "bind_address": "FLYWHEEL_BIND_ADDRESS",
    "workers": "FLYWHEEL_WORKERS",
    "log_uri": "FLYWHEEL_INFERENCE_LOG_URI",
    "log_sample_rate": "FLYWHEEL_INFERENCE_LOG_SAMPLE_RATE",
    "log_flush_seconds": "FLYWHEEL_INFERENCE_LOG_FLUSH_SECONDS",
    "log_batch_rows": "FLYWHEEL_INFERENCE_LOG_BATCH_ROWS",
    "s3_endpoint": "FLYWHEEL_S3_ENDPOINT",
}

ServeReason = Literal[
    "InvalidSpec", "ModelNotFound", "TrackingUnavailable", "ModelUnloadable", "InternalError"
]
# A retry (the pod restarting) helps only when MLflow was unreachable.
EXIT_CODES: dict[str, int] = {
    "InternalError": 1,
    "InvalidSpec": 14,
    "TrackingUnavailable": 25,
    "ModelNotFound": 30,
    "ModelUnloadable": 31,
}


class ServeError(Exception):
    """The server cannot start; the message names the variable to fix."""

    def __init__(self, reason: ServeReason, message: str) -> None:
        super().__init__(message)
        self.reason: ServeReason = reason
        self.message = message


class ServeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_uri: str = Field(min_length=1)
    tracking_uri: str | None = None
    model_name: str = Field(default="model", min_length=1, pattern=r"^[^/?#\s]+$")
    model_version: str = "unknown"
    track: Literal["stable", "canary"] = "stable"
    port: int = Field(default=8080, ge=1, le=65535)
    bind_address: str = "0.0.0.0"
    workers: int = Field(default=2, ge=1, le=64)
    log_uri: str | None = Field(default=None, pattern=r"^(s3|file)://.+")
    log_sample_rate: float = Field(default=1.0, ge=0, le=1)
    log_flush_seconds: float = Field(default=60.0, gt=0)
    log_batch_rows: int = Field(default=25_000, ge=1)  # fewer, larger files: see inference_log.py
    s3_endpoint: str | None = None
    model_path: str | None = None  # the local copy the server downloaded, for the workers


def build_settings(**given: object) -> ServeSettings:
    """Settings from the command's options (None: not given, use the default),
    or an InvalidSpec error naming the variable."""
    if not given.get("model_uri"):
        raise ServeError("InvalidSpec", "FLYWHEEL_MODEL_URI is not set: which model to serve?")
    values = {key: value for key, value in given.items() if value not in (None, "")}
    try:
        return ServeSettings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        variable = ENV.get(field, field)
        raise ServeError(
            "InvalidSpec", f"{variable}={values.get(field)!r} is invalid: {first['msg']}"
        ) from exc


def to_environment(settings: ServeSettings) -> None:
    os.environ[WORKER_SETTINGS] = settings.model_dump_json()


def from_environment() -> ServeSettings:
    return ServeSettings.model_validate(json.loads(os.environ[WORKER_SETTINGS]))


def report_failure(exc: ServeError) -> None:
    """One line on stderr, and the termination message the operator reads
    (FLYWHEEL_TERMINATION_LOG), in the workloads' JSON shape."""
    import sys

    from ..workloads.termination import (
        DEFAULT_PATH,
        redact,
        render_termination,
        secret_values,
        write_termination,
    )

    secrets = secret_values(os.environ)
    print(redact(f"flywheel serve: {exc.message}", secrets), file=sys.stderr, flush=True)
    message = {"ok": False, "error": {"reason": exc.reason, "message": exc.message}}
    path = os.environ.get("FLYWHEEL_TERMINATION_LOG") or DEFAULT_PATH
    try:
        write_termination(render_termination(message, secrets), path)
    except OSError as error:  # stderr still says it, and `kubectl logs` shows stderr
        print(f"flywheel serve: cannot write {path}: {error.strerror}", file=sys.stderr)
