"""`flywheel drift-check`: the workload of an InferenceService's drift CronJob.

Compares the inference log of the last window with reference data using
Evidently's data-drift tests. The pod has no Kubernetes API rights: the
operator reads the result from the termination message. The environment:

    FLYWHEEL_REFERENCE_URI       the reference Dataset's source (s3://, file://, https://)
    FLYWHEEL_REFERENCE_FORMAT    csv, parquet or jsonl
    FLYWHEEL_REFERENCE_VERSION   the Dataset version (recorded only)
    FLYWHEEL_CURRENT_URI         <root>/inference-logs/<namespace>/<service> (s3:// or file://)
    FLYWHEEL_WINDOW              how much recent traffic: 1h, 30m, ... (default 1h)
    FLYWHEEL_NOW                 the window's end, ISO 8601 (default: now)
    FLYWHEEL_FEATURES            JSON list of columns; default every column of both
                                 sides but flywheel's own and the target
    FLYWHEEL_TARGET_COLUMN       never a feature
    FLYWHEEL_STAT_TEST           an Evidently test for every column (psi, ks, ...);
                                 default: Evidently chooses per column
    FLYWHEEL_STAT_TEST_THRESHOLD that test's threshold
    FLYWHEEL_DRIFT_THRESHOLD     share of drifted columns that is drift (default 0.5)
    FLYWHEEL_MIN_ROWS            fewer rows is InsufficientData (default 100)
    FLYWHEEL_MAX_ROWS            sample size cap per side (default 200000)
    FLYWHEEL_SEED                the sample's seed (default 0)
    FLYWHEEL_REPORT_URI          where report.html and result.json go (s3:// or file://)
    MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME: both set = a run tagged flywheel.check=drift
    FLYWHEEL_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, HTTP_AUTHORIZATION
    FLYWHEEL_TERMINATION_LOG     where the result JSON goes (/dev/termination-log)

Drift, NoDrift and InsufficientData all exit 0; failures exit with the code
of their reason (drift_errors.py, which says which are worth a retry).
MLflow being unreachable does not fail the check: `mlflowError` says why
there is no run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import traceback
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from ..api.common import DURATION_PATTERN, parse_duration
from ..api.stamps import parse_stamp
from .drift_errors import DRIFT_EXIT_CODES, DriftError, from_storage
from .errors import WorkloadError
from .snapshot import configure_logging, failed
from .storage import s3_client, s3_message, s3_reason, split_s3_uri, with_retries, write_object
from .termination import DEFAULT_PATH, render_termination, report_and_exit, secret_values

log = logging.getLogger("flywheel.drift")

REPORT_NAME = "report.html"
RESULT_NAME = "result.json"
ARTIFACT_PATH = "drift"  # in the MLflow run: drift/report.html, drift/result.json
MAX_PARAM_LENGTH = 6000


@dataclass(frozen=True)
class DriftSettings:
    """The environment contract, parsed and checked (`settings_from_env`)."""

    reference_uri: str
    reference_format: str
    current_uri: str
    report_uri: str
    window: timedelta
    now: datetime
    reference_version: str | None = None
    features: list[str] | None = None
    target_column: str | None = None
    stat_test: str | None = None
    stat_test_threshold: float | None = None
    drift_threshold: float = 0.5
    min_rows: int = 100
    max_rows: int = 200_000
    seed: int = 0
    s3_endpoint: str | None = None
    http_authorization: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    window_text: str = "1h"

    @property
    def report_file_uri(self) -> str:
        return f"{self.report_uri.rstrip('/')}/{REPORT_NAME}"

    @property
    def result_file_uri(self) -> str:
        return f"{self.report_uri.rstrip('/')}/{RESULT_NAME}"


# --- the environment -------------------------------------------------------


def settings_from_env(env: Mapping[str, str]) -> DriftSettings:
    """Every FLYWHEEL_* value checked; BadConfig names the variable at fault."""

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    def required(name: str) -> str:
        value = get(name)
        if value is None:
            raise DriftError("BadConfig", f"{name} is not set")
        return value

    reference_uri = required("FLYWHEEL_REFERENCE_URI")
    current_uri = required("FLYWHEEL_CURRENT_URI")
    report_uri = required("FLYWHEEL_REPORT_URI")
    check_scheme("FLYWHEEL_REFERENCE_URI", reference_uri, ("s3", "file", "http", "https"))
    check_scheme("FLYWHEEL_CURRENT_URI", current_uri, ("s3", "file"))
    check_scheme("FLYWHEEL_REPORT_URI", report_uri, ("s3", "file"))
    data_format = (get("FLYWHEEL_REFERENCE_FORMAT") or "").lower()
    if data_format not in ("csv", "parquet", "jsonl"):
        raise DriftError(
            "BadConfig",
            f"FLYWHEEL_REFERENCE_FORMAT must be csv, parquet or jsonl, not {data_format!r}",
        )
    window_text = get("FLYWHEEL_WINDOW") or "1h"
    if not re.fullmatch(DURATION_PATTERN, window_text):
        raise DriftError(
            "BadConfig", f"FLYWHEEL_WINDOW must be a duration like 1h or 30m, not {window_text!r}"
        )
    window = parse_duration(window_text)
    if window <= timedelta(0):
        raise DriftError("BadConfig", f"FLYWHEEL_WINDOW must be longer than 0, not {window_text}")
    tracking_uri, experiment = get("MLFLOW_TRACKING_URI"), get("MLFLOW_EXPERIMENT_NAME")
    return DriftSettings(
        reference_uri=reference_uri,
        reference_format=data_format,
        current_uri=current_uri,
        report_uri=report_uri,
        window=window,
        window_text=window_text,
        now=parse_now(get("FLYWHEEL_NOW")),
        reference_version=get("FLYWHEEL_REFERENCE_VERSION"),
        features=parse_features(get("FLYWHEEL_FEATURES")),
        target_column=get("FLYWHEEL_TARGET_COLUMN"),
        stat_test=get("FLYWHEEL_STAT_TEST"),
        stat_test_threshold=number(
            "FLYWHEEL_STAT_TEST_THRESHOLD", get("FLYWHEEL_STAT_TEST_THRESHOLD"), None, low=0
        ),
        drift_threshold=number(
            "FLYWHEEL_DRIFT_THRESHOLD", get("FLYWHEEL_DRIFT_THRESHOLD"), 0.5, low=0, high=1
        ),
        min_rows=integer("FLYWHEEL_MIN_ROWS", get("FLYWHEEL_MIN_ROWS"), 100, low=1),
        max_rows=integer("FLYWHEEL_MAX_ROWS", get("FLYWHEEL_MAX_ROWS"), 200_000, low=1),
        seed=integer("FLYWHEEL_SEED", get("FLYWHEEL_SEED"), 0, low=0),
        s3_endpoint=get("FLYWHEEL_S3_ENDPOINT"),
        http_authorization=get("HTTP_AUTHORIZATION"),
        tracking_uri=tracking_uri if experiment else None,
        experiment=experiment if tracking_uri else None,
    )


def check_scheme(name: str, uri: str, schemes: tuple[str, ...]) -> None:
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise DriftError("BadConfig", f"{name} must be {allowed}, not {uri!r}")


def parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = parse_stamp(text)
    except ValueError as exc:
        raise DriftError("BadConfig", f"FLYWHEEL_NOW is not an ISO 8601 time: {text!r}") from exc
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_features(text: str | None) -> list[str] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DriftError("BadConfig", f"FLYWHEEL_FEATURES is not JSON: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DriftError("BadConfig", "FLYWHEEL_FEATURES must be a JSON list of column names")
    return value or None


def number(
    name: str, text: str | None, default: float | None, low: float, high: float | None = None
) -> float | None:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= low or (high is not None and value > high):
        bounds = f"in ({low:g}, {high:g}]" if high is not None else f"above {low:g}"
        raise DriftError("BadConfig", f"{name} must be a number {bounds}, not {text!r}")
    return value


def integer(name: str, text: str | None, default: int, low: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise DriftError("BadConfig", f"{name} must be an integer >= {low}, not {text!r}")
    return value


# --- the check -------------------------------------------------------------


@dataclass
class CheckResult:
    """Everything the check found; `termination()` is the small part."""

    result: str  # Drift, NoDrift or InsufficientData
    share: float
    threshold: float
    features: list[dict[str, Any]]
    rows: dict[str, int | None]
    sampled: dict[str, int | None]
    window: dict[str, str]
    report_uri: str | None
    result_uri: str
    details: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    mlflow_error: str | None = None

    def termination(self) -> dict[str, Any]:
        # Drifted features first: the termination message drops from the end.
        ordered = sorted(self.features, key=lambda f: not f["drifted"])
        message: dict[str, Any] = {
            "ok": True,
            "result": self.result,
            "share": self.share,
            "threshold": self.threshold,
            "features": [
                {k: f.get(k) for k in ("name", "score", "drifted", "method")} for f in ordered
            ],
            "rows": self.rows,
            "sampled": self.sampled,
            "reportUri": self.report_uri,
            "resultUri": self.result_uri,
            "mlflowRunId": self.mlflow_run_id,
            "window": self.window,
        }
        if self.mlflow_error:
            message["mlflowError"] = self.mlflow_error
        return message

    def document(self) -> dict[str, Any]:
        """result.json: the termination message unshortened, plus the settings used."""
        return {**self.termination(), "features": self.features, **self.details}


def check_drift(settings: DriftSettings) -> tuple[CheckResult, bytes | None]:
    """Read both sides, run Evidently; the result and the report's HTML
    (None for InsufficientData). Raises DriftError."""
    # pandas, pyarrow and Evidently load here, not when the command line starts.
    from . import drift_data as data
    from .drift_report import check_stat_test, run_drift, verdict

    window = data.Window.ending(settings.now, settings.window)
    with data.temporary_directory() as directory:
        spooled = data.Spool(directory)
        reference = data.open_reference(
            settings.reference_uri,
            settings.reference_format,
            settings.s3_endpoint,
            settings.http_authorization,
        )
        reference_columns = data.reference_columns(reference, spooled)
        files = data.list_current(settings.current_uri, window, settings.s3_endpoint)
        types = data.current_types(files, spooled) if files else None
        log.info("%d inference-log files in the window %s to %s", len(files), *window_text(window))
        features = data.choose_features(
            settings.features,
            reference_columns,
            list(types) if types is not None else None,
            settings.target_column,
        )
        kinds = data.kinds_of(types or {}, features)
        check_stat_test(settings.stat_test, kinds if types is not None else {})

        current = data.Reservoir(settings.max_rows, settings.seed)
        data.read_current(files, features, window, current, spooled)
        base = partial_result(settings, window, features, current.seen)
        if current.seen < settings.min_rows:
            log.info("%d rows in the window, fewer than %d", current.seen, settings.min_rows)
            return base_result(base, "InsufficientData", "current"), None

        ref = data.Reservoir(settings.max_rows, settings.seed)
        data.read_reference(reference, features, ref, spooled)
        if ref.seen < settings.min_rows:
            log.info("%d reference rows, fewer than %d", ref.seen, settings.min_rows)
            insufficient = base_result(base, "InsufficientData", "reference")
            insufficient.rows["reference"] = ref.seen
            return insufficient, None

    current_side = data.side_data(current, features, kinds)
    reference_side = data.side_data(ref, features, kinds)
    del current, ref
    data.release_freed_memory()
    log.info(
        "checking %d features: %d reference rows (sample %s), %d current rows (sample %s)",
        len(features),
        reference_side.rows,
        reference_side.sampled,
        current_side.rows,
        current_side.sampled,
    )
    outcome = run_drift(
        reference_side.frame,
        current_side.frame,
        kinds,
        method=settings.stat_test,
        stat_threshold=settings.stat_test_threshold,
        drift_share=settings.drift_threshold,
    )
    result = base_result(base, verdict(outcome.share, settings.drift_threshold), None)
    result.share = outcome.share
    result.features = [
        {**f.to_wire(), "threshold": f.threshold, "kind": kinds[f.name]} for f in outcome.features
    ]
    result.rows = {"reference": reference_side.rows, "current": current_side.rows}
    result.sampled = {
        "reference": reference_side.sampled,
        "current": current_side.sampled,
        "seed": settings.seed,
    }
    result.details["driftedCount"] = outcome.drifted
    result.details["evidently"] = json_safe(outcome.report)
    return result, outcome.html


def partial_result(
    settings: DriftSettings, window: Any, features: list[str], current_rows: int
) -> CheckResult:
    start, end = window_text(window)
    return CheckResult(
        result="",
        share=0.0,
        threshold=settings.drift_threshold,
        features=[],
        rows={"reference": None, "current": current_rows},
        sampled={"reference": None, "current": None, "seed": settings.seed},
        window={"start": start, "end": end},
        report_uri=settings.report_file_uri,
        result_uri=settings.result_file_uri,
        details={
            "checkedFeatures": features,
            "minRows": settings.min_rows,
            "maxRows": settings.max_rows,
            "statTest": settings.stat_test,
            "statTestThreshold": settings.stat_test_threshold,
            "reference": {
                "uri": settings.reference_uri,
                "format": settings.reference_format,
                "version": settings.reference_version,
            },
            "currentUri": settings.current_uri,
        },
    )


def base_result(base: CheckResult, result: str, insufficient: str | None) -> CheckResult:
    base.result = result
    if insufficient:
        base.details["insufficient"] = insufficient
        base.report_uri = None  # no Evidently run, no report
    return base


def window_text(window: Any) -> tuple[str, str]:
    return iso(window.start), iso(window.end)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def json_safe(value: Any) -> Any:
    """NaN and infinities (Evidently writes them for constant columns) as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


# --- MLflow ----------------------------------------------------------------


class Tracking:
    """The MLflow run of one check; every failure is recorded, never raised."""

    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        self.run_id: str | None = None
        self.error: str | None = None

    def start(self) -> None:
        if not self.settings.tracking_uri:
            return
        try:
            import mlflow

            mlflow.set_tracking_uri(self.settings.tracking_uri)
            mlflow.set_experiment(self.settings.experiment)
            run = mlflow.start_run(
                run_name=f"drift-{self.settings.now.strftime('%Y%m%dT%H%M%SZ')}",
                tags={"flywheel.check": "drift"},
            )
            self.run_id = run.info.run_id
        except Exception as exc:
            self._failed("start a run", exc)

    def log(self, result: CheckResult, html: bytes | None, document: bytes) -> None:
        if self.run_id is None:
            return
        try:
            import mlflow

            settings = self.settings
            mlflow.log_params(
                {
                    "window": settings.window_text,
                    "features": json.dumps(result.details.get("checkedFeatures"))[
                        :MAX_PARAM_LENGTH
                    ],
                    "stat_test": settings.stat_test or "auto",
                    "stat_test_threshold": str(settings.stat_test_threshold or "auto"),
                    "drift_threshold": str(settings.drift_threshold),
                    "min_rows": str(settings.min_rows),
                    "max_rows": str(settings.max_rows),
                    "seed": str(settings.seed),
                    "reference_uri": settings.reference_uri[:MAX_PARAM_LENGTH],
                    "reference_version": settings.reference_version or "",
                    "current_uri": settings.current_uri[:MAX_PARAM_LENGTH],
                }
            )
            mlflow.set_tags(
                {
                    "flywheel.drift.result": result.result,
                    "flywheel.window.start": result.window["start"],
                    "flywheel.window.end": result.window["end"],
                }
            )
            metrics = {
                "share_drifted": result.share,
                "rows_current": float(result.rows["current"] or 0),
            }
            if result.rows.get("reference") is not None:
                metrics["rows_reference"] = float(result.rows["reference"] or 0)
            for feature in result.features:
                if feature.get("score") is not None:
                    metrics[f"score.{metric_name(feature['name'])}"] = feature["score"]
            mlflow.log_metrics(metrics)
            if html is not None:
                mlflow.log_text(html.decode(), f"{ARTIFACT_PATH}/{REPORT_NAME}")
            mlflow.log_text(document.decode(), f"{ARTIFACT_PATH}/{RESULT_NAME}")
        except Exception as exc:
            self._failed("log the check", exc)

    def end(self, ok: bool) -> None:
        if self.run_id is None:
            return
        try:
            import mlflow

            mlflow.end_run("FINISHED" if ok else "FAILED")
        except Exception as exc:
            self._failed("end the run", exc)

    def _failed(self, action: str, exc: BaseException) -> None:
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        self.error = self.error or f"cannot {action} at {self.settings.tracking_uri}: {line[:300]}"
        log.warning("MLflow: %s", self.error)


def metric_name(column: str) -> str:
    """MLflow metric names allow letters, digits and _-./ and spaces only."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in column)[:200]


# --- writing ---------------------------------------------------------------


def write_outputs(settings: DriftSettings, html: bytes | None, document: bytes) -> None:
    if html is not None:
        put(settings.report_file_uri, html, "text/html; charset=utf-8", settings.s3_endpoint)
    put(settings.result_file_uri, document, "application/json", settings.s3_endpoint)
    log.info("wrote %s", settings.report_uri)


def put(uri: str, data: bytes, content_type: str, endpoint: str | None) -> None:
    """One object; s3:// with its content type, so a browser shows the report."""
    if not uri.startswith("s3://"):
        try:
            write_object(uri, data, endpoint=endpoint)
        except WorkloadError as exc:
            raise from_storage(exc, "report") from exc
        return
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_uri(uri)
    client = s3_client(endpoint, None)
    try:
        with_retries(
            lambda: client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type),
            f"writing {uri}",
        )
    except (BotoCoreError, ClientError) as exc:
        error = WorkloadError("SourceUnreachable", s3_message("write", uri, endpoint, exc))
        if s3_reason(exc) == "AccessDenied":
            error = WorkloadError("AccessDenied", error.message)
        raise from_storage(error, "report") from exc


def render_document(result: CheckResult) -> bytes:
    return json.dumps(json_safe(result.document()), indent=1, allow_nan=False).encode()


# --- the command -----------------------------------------------------------


def run_drift_check(env: Mapping[str, str]) -> tuple[dict[str, Any], int]:
    """The termination message and exit code; never raises."""
    tracking: Tracking | None = None
    try:
        settings = settings_from_env(env)
        tracking = Tracking(settings)
        tracking.start()
        result, html = check_drift(settings)
        result.mlflow_run_id = tracking.run_id
        tracking.log(result, html, render_document(result))
        result.mlflow_error = tracking.error
        write_outputs(settings, html, render_document(result))
        tracking.end(ok=True)
    except DriftError as exc:
        log.error("drift check failed (%s): %s", exc.reason, exc.message)
        if tracking is not None:
            tracking.end(ok=False)
        return failed(exc.reason, exc.message), DRIFT_EXIT_CODES[exc.reason]
    except Exception as exc:  # the message must say something even for a bug
        log.error("drift check failed unexpectedly:\n%s", traceback.format_exc())
        if tracking is not None:
            tracking.end(ok=False)
        return failed("InternalError", f"{type(exc).__name__}: {exc}"), 1
    log.info("result: %s (share %.3f)", result.result, result.share)
    return result.termination(), 0


def render(message: dict[str, Any], secrets: list[str]) -> str:
    """Under the termination limit; if even the features had to go, keep the verdict."""
    text = render_termination(message, secrets)
    if message.get("ok") and '"truncated":true' in text:
        keys = ("ok", "result", "share", "threshold", "rows", "mlflowRunId")
        text = render_termination({k: message.get(k) for k in keys} | {"truncated": True})
    return text


@click.command("drift-check")
@click.option(
    "--termination-log",
    envvar="FLYWHEEL_TERMINATION_LOG",
    default=DEFAULT_PATH,
    show_default=True,
    help="Where to write the result JSON (the container's termination message).",
)
def drift_check_command(termination_log: str) -> None:
    """Check an InferenceService's recent inference log for data drift (runs in the drift CronJob).

    Everything else comes from the FLYWHEEL_* environment the operator sets
    (see flywheel.workloads.drift). Exits 0 with a Drift, NoDrift or
    InsufficientData result; otherwise with the code of the error reason."""
    from .allocator import use_system_allocator

    use_system_allocator()  # first: before pyarrow loads
    # A failed tracking server must cost seconds, not the retries' minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    secrets = secret_values(os.environ)
    configure_logging(secrets, ("flywheel.drift",))
    message, code = run_drift_check(os.environ)
    text = render(message, secrets)
    report_and_exit(text, termination_log, log, code)
