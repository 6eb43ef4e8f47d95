"""`flywheel serve`: the model server in a ModelVersion's Deployment.

Every option also comes from the environment the operator sets; an option
given on the command line wins.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from .settings import ENV, EXIT_CODES, ServeError, build_settings, report_failure

log = logging.getLogger("flywheel.serve")


def _option(name: str, help: str) -> click.Option:
    # Text here, checked by ServeSettings: its errors name the variable.
    flag = "--" + name.replace("_", "-")
    variable = ENV[name]
    return click.option(flag, name, envvar=variable, help=f"{help} [env {variable}]")


OPTIONS = [
    _option("model_uri", "models:/<name>/<version>, models:/m-<id> or runs:/<run>/model."),
    _option("tracking_uri", "The MLflow tracking (and registry) server."),
    _option("model_name", "The name in /v2/models/{name} (default: model)."),
    _option("model_version", "The ModelVersion's name: metric label and logged column."),
    _option("track", "stable or canary: metric label (default: stable)."),
    _option("port", "Port of every endpoint (default: 8080)."),
    _option("bind_address", "Address to listen on (default: 0.0.0.0)."),
    _option("workers", "Worker processes (default: 2)."),
    _option("log_uri", "Inference log: s3://bucket/prefix or file:///dir; unset: off."),
    _option("log_sample_rate", "Share of rows logged, 0..1 (default: 1)."),
    _option("log_flush_seconds", "Write buffered rows at least this often (default: 60)."),
    _option("log_batch_rows", "Write a file once this many rows wait (default: 25000)."),
    _option("s3_endpoint", "S3 endpoint of the inference log (AWS_* keys)."),
]


def serve_options(function):
    for option in reversed(OPTIONS):
        function = option(function)
    return function


@click.command("serve")
@serve_options
@click.option(
    "--termination-log",
    envvar="FLYWHEEL_TERMINATION_LOG",
    default="/dev/termination-log",
    show_default=True,
    help="Where a start-up failure is written (the container's termination message).",
)
def serve_command(termination_log: str, **options: object) -> None:
    """Serve a model from MLflow over the Open Inference Protocol (v2) and
    MLflow's /invocations, with Prometheus metrics at /metrics.

    Runs until SIGTERM, then finishes the requests in flight, writes the
    inference log's buffers and exits 0. Exits non-zero, with the reason in
    the termination message, when the model cannot be fetched or loaded."""
    from ..workloads.snapshot import configure_logging
    from ..workloads.termination import secret_values

    # The workers write their failures to the same file: they read this.
    os.environ["FLYWHEEL_TERMINATION_LOG"] = termination_log
    # No usage data from the pod; fail over to our own retries quickly.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    configure_logging(secret_values(os.environ), ("flywheel.serve",))
    try:
        from .server import serve

        code = serve(build_settings(**options))
    except ServeError as exc:
        report_failure(exc)
        sys.exit(EXIT_CODES[exc.reason])
    except Exception as exc:
        log.exception("flywheel serve failed")
        report_failure(ServeError("InternalError", f"{type(exc).__name__}: {exc}"))
        sys.exit(EXIT_CODES["InternalError"])
    sys.exit(code)
