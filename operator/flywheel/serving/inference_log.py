"""The inference log: a sample of requests' rows and predictions, as Parquet,
for drift detection.

The request path only samples rows and appends them to a bounded deque
(`record`, a microsecond or two: no lock, no wake-up); a full deque drops
them and counts them `dropped`, it never makes a request wait. One
background thread per worker takes them every 0.2 s, buffers the rows by
UTC hour and writes a file when a buffer reaches `batch_rows` rows
(default 25,000) or has waited `flush_seconds`:

    <uri>/hour=YYYY-MM-DDTHH/<hostname>-<pid>-<seq:06d>.parquet

with the model's input columns under their own names, `_flywheel_time`
(timestamp ms, UTC), `_flywheel_prediction` (string for classifiers,
float64 for regressors) and `_flywheel_model_version`. Column types come
from the signature, so every file of a model version has the same schema.
`close` writes whatever is buffered: the worker calls it on shutdown.

A file the store refuses (an outage, a restart) is kept and tried again
with backoff (1 s doubling to 30 s), oldest first, so rows logged while the
store is down reach it once it is back. Memory bounds what is kept:
past `max_unsent_bytes` of encoded files the oldest are dropped and counted.

s3:// goes through boto3 (FLYWHEEL_S3_ENDPOINT, AWS_* keys); file:// writes
local files, written under a hidden name and renamed, so a reader never sees
half a file.
"""

from __future__ import annotations

import collections
import logging
import operator
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .signature import Batch, Column

log = logging.getLogger("flywheel.serve")

TIME = "_flywheel_time"
PREDICTION = "_flywheel_prediction"
VERSION = "_flywheel_model_version"
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 1.0, 30.0
DRAIN_SECONDS = 0.2  # how often the writer thread takes what requests queued
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class LogSettings:
    uri: str
    sample_rate: float = 1.0
    flush_seconds: float = 60.0
    # A Parquet file has a fixed cost (footer, a chunk and statistics a
    # column): at 1,000 rows it was 3-7 us a row, at 10,000 under 1 us.
    # At 25,000 the writer's share of a logging server's CPU fell from 7.9% to
    # 7.0% (the serving bench, 64-row requests of 30 floats, an A/B in one
    # run); in one process the Parquet write took ~20% less a row on the
    # bench's repeated rows, ~5% on unique floats. 50,000 was no cheaper on
    # unique floats (a buffer past the caches), for twice the memory.
    batch_rows: int = 25_000
    endpoint: str | None = None
    queue_requests: int = 10_000  # requests waiting for the writer, at most
    max_unsent_bytes: int = 64 << 20  # encoded files kept while the store is down


def hour_of(epoch_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H", time.gmtime(epoch_ms / 1000))


def object_uri(base: str, hour: str, host: str, pid: int, seq: int) -> str:
    return f"{base.rstrip('/')}/hour={hour}/{host}-{pid}-{seq:06d}.parquet"


def sample(rows: int, rate: float, rng: np.random.Generator) -> np.ndarray | None:
    """Which rows to log: None for all of them; an index array otherwise."""
    if rate >= 1:
        return None
    return np.flatnonzero(rng.random(rows) < rate)


# --- buffering (pure) ------------------------------------------------------


Part = tuple[int, dict[str, np.ndarray], np.ndarray, np.ndarray | None]


@dataclass
class HourBuffer:
    hour: str
    started: float  # monotonic time of the first rows
    # (epoch ms, columns ({} when the matrix is kept), predictions, the request's matrix or None)
    parts: list[Part] = field(default_factory=list)
    rows: int = 0


class Buffers:
    """Rows waiting to be written, one buffer per UTC hour."""

    def __init__(self, batch_rows: int, flush_seconds: float) -> None:
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.hours: dict[str, HourBuffer] = {}
        self._hour_names: dict[int, str] = {}  # epoch hour -> its name: strftime once an hour

    def add(
        self,
        epoch_ms: int,
        columns: dict[str, np.ndarray],
        predictions: np.ndarray,
        matrix: np.ndarray | None = None,
        *,
        now: float,
    ) -> bool:
        """Buffer one request's rows; True when its hour's buffer is now full."""
        hour_number = epoch_ms // HOUR_MS
        hour = self._hour_names.get(hour_number)
        if hour is None:
            if len(self._hour_names) > 4:  # only the last few hours see new rows
                self._hour_names.clear()
            hour = self._hour_names[hour_number] = hour_of(epoch_ms)
        buffer = self.hours.get(hour)
        if buffer is None:
            buffer = self.hours[hour] = HourBuffer(hour, now)
        buffer.parts.append((epoch_ms, columns, predictions, matrix))
        buffer.rows += len(predictions)
        return buffer.rows >= self.batch_rows

    def due(self, now: float) -> list[HourBuffer]:
        """Take the buffers that are full or old enough (or all, `now` = inf)."""
        ready = [
            b
            for b in self.hours.values()
            if b.rows >= self.batch_rows or now - b.started >= self.flush_seconds
        ]
        for buffer in ready:
            del self.hours[buffer.hour]
        return ready

    def next_deadline(self) -> float | None:
        if not self.hours:
            return None
        return min(b.started for b in self.hours.values()) + self.flush_seconds


# --- Parquet ---------------------------------------------------------------


def arrow_type(column_type: str) -> Any:
    import pyarrow as pa

    return {
        "double": pa.float64(),
        "float": pa.float32(),
        "long": pa.int64(),
        "integer": pa.int32(),
        "boolean": pa.bool_(),
        "string": pa.string(),
        "binary": pa.binary(),
        "datetime": pa.timestamp("ns"),
    }.get(column_type)


def to_table(
    buffer: HourBuffer, schema: Sequence[Column] | None, classifier: bool, version: str
) -> Any:
    """One table of the buffer's rows. Whole columns at a time: a buffer of
    one-row requests has thousands of parts, and per-part conversions
    (text predictions, timestamps) cost ~100 us a row."""
    import pyarrow as pa

    parts = buffer.parts
    names = [c.name for c in schema] if schema else list(parts[0][1])
    types = {c.name: arrow_type(c.type) for c in schema or ()}
    arrays: dict[str, Any] = {}
    for name, values in zip(names, feature_columns(parts, names, schema), strict=True):
        arrays[name] = arrow_array(values, types.get(name))
    lengths = np.fromiter((len(p[2]) for p in parts), dtype=np.int64, count=len(parts))
    stamps = np.fromiter((p[0] for p in parts), dtype=np.int64, count=len(parts))
    arrays[TIME] = pa.array(np.repeat(stamps, lengths), type=pa.timestamp("ms", tz="UTC"))
    predictions = all_predictions([p[2] for p in parts], classifier)
    arrays[PREDICTION] = prediction_array(predictions, classifier)
    arrays[VERSION] = pa.repeat(pa.scalar(version, pa.string()), int(lengths.sum()))
    return pa.table(arrays)


def feature_columns(
    parts: list[Part], names: list[str], schema: Sequence[Column] | None
) -> list[np.ndarray]:
    """Each feature's values over all parts, in `names` order."""
    if not names:
        return []
    if schema and all(p[3] is not None for p in parts):
        # Every request sent whole rows: one concatenation of their matrices
        # (signature order) instead of one per column: 6.3 -> 0.2 us a row at
        # one row a request. A matrix exists only when no column needed
        # converting, so the signature fixes their dtype: they all share it.
        matrices = [p[3] for p in parts]
        rows = sum(len(m) for m in matrices)  # type: ignore[arg-type]
        # Column-major: one copy leaves each column contiguous for Arrow.
        stacked = np.empty((rows, len(names)), dtype=matrices[0].dtype, order="F")  # type: ignore[union-attr]
        np.concatenate(matrices, out=stacked)  # type: ignore[arg-type]
        return [stacked[:, j] for j in range(len(names))]
    # One C call a part picks its columns; zip turns the parts' tuples into columns.
    pick = operator.itemgetter(*names)
    picked = [pick(p[1] if p[3] is None else matrix_columns(p[3], names)) for p in parts]
    by_column = zip(*picked, strict=True) if len(names) > 1 else (picked,)
    return [np.concatenate(values) for values in by_column]


def matrix_columns(matrix: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    return {name: matrix[:, j] for j, name in enumerate(names)}


def all_predictions(parts: list[np.ndarray], classifier: bool) -> np.ndarray:
    """The parts' predictions in one array, to convert at once (thousands of
    parts); part by part only when their shapes do not stack."""
    try:
        return np.concatenate(parts)
    except ValueError:
        return np.concatenate([p if p.ndim == 1 else several_outputs(p, classifier) for p in parts])


def arrow_array(values: np.ndarray, arrow: Any) -> Any:
    import pyarrow as pa

    if arrow is None:
        return pa.array(values if values.dtype != object else values.tolist())
    if values.dtype.kind == "f" and pa.types.is_integer(arrow):  # an optional column with gaps
        return pa.array(values, mask=np.isnan(values)).cast(arrow)
    if values.dtype == object:
        return pa.array(values.tolist(), type=arrow, from_pandas=True)
    if values.dtype.kind == "f" and not np.isnan(values).any():
        # from_pandas looks for NaN (to write it as null) a value at a time:
        # 0.055 us a row of 30 floats, against 0.012 with one vectorised check.
        return pa.array(values, type=arrow)
    return pa.array(values, type=arrow, from_pandas=True)


def prediction_array(predictions: np.ndarray, classifier: bool) -> Any:
    """The prediction column: text for classifiers, float64 for regressors."""
    import pyarrow as pa

    if predictions.ndim > 1:
        predictions = several_outputs(predictions, classifier)
    if not classifier:
        return pa.array(predictions.astype(np.float64), type=pa.float64())
    if predictions.dtype.kind in "iu":
        # Arrow writes integers as numpy does ("3", "-1"): 0.01 us a row,
        # against 0.11 for numpy's text handed to Arrow.
        return pa.array(predictions).cast(pa.string())
    # Anything else keeps numpy's text ("1.0", "True", where Arrow would write
    # "1", "true").
    return pa.array(predictions.astype(str), type=pa.string())


def several_outputs(predictions: np.ndarray, classifier: bool) -> np.ndarray:
    """Several outputs a row: their JSON-ish text, or NaN for a regressor's
    one float column."""
    if not classifier:
        return np.full(len(predictions), np.nan)
    return np.array([str(row) for row in predictions.tolist()], dtype=object)


def parquet_bytes(table: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Dictionary-encode text only: tried on float columns it is abandoned
    # page after page, and halved the writer's speed for larger files.
    # LZ4, not zstd: the encoding runs on the serving worker's CPU, and zstd
    # took 0.74 us a row of 30 floats against LZ4's 0.41 (files ~1.5x larger).
    # Min/max statistics for the time column only, which a reader can skip
    # row groups by; on every column they were 15% of the writer's time.
    # Arrow's own buffer, not io.BytesIO: every page written to a Python file
    # object is a call into Python and a copy into its growing buffer. The
    # whole write of 25,000 rows of 30 floats: 0.30 -> 0.22 us a row on
    # random values (6 MB files), 0.148 -> 0.140 on rows that compress well.
    text = [f.name for f in table.schema if pa.types.is_string(f.type)]
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="lz4", use_dictionary=text, write_statistics=[TIME])
    return sink.getvalue().to_pybytes()


# --- where the files go ----------------------------------------------------


def writer_for(uri: str, endpoint: str | None) -> Callable[[str, bytes], None]:
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme == "file":
        return write_file
    if scheme == "s3":
        from ..workloads.storage import s3_client

        client = s3_client(endpoint, None)

        def write_s3(target: str, data: bytes) -> None:
            parts = urllib.parse.urlsplit(target)
            client.put_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"), Body=data)

        return write_s3
    raise ValueError(f"FLYWHEEL_INFERENCE_LOG_URI must be s3:// or file://, not {uri!r}")


def write_file(target: str, data: bytes) -> None:
    path = Path(urllib.parse.unquote(urllib.parse.urlsplit(target).path))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)


# --- the background writer -------------------------------------------------


class InferenceLog:
    """Samples on the request path; buffers and writes on its own thread."""

    def __init__(
        self,
        settings: LogSettings,
        schema: Sequence[Column] | None,
        classifier: bool,
        model_version: str,
        metrics: Any,
        write: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.settings = settings
        self.schema = schema
        self.classifier = classifier
        self.model_version = model_version
        self.metrics = metrics
        self.write = write or writer_for(settings.uri, settings.endpoint)
        # Requests' rows waiting for the writer, as HourBuffer.parts holds them.
        # A deque's append and popleft are atomic, so the request path takes no
        # lock and wakes nobody (queue.Queue did both, for every request).
        self.pending: collections.deque[Part] = collections.deque()
        self.stopping = threading.Event()
        self.buffers = Buffers(settings.batch_rows, settings.flush_seconds)
        self.rng = np.random.default_rng()
        self.host = socket.gethostname()
        self.seq = 0
        self.thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        # Files the store refused, oldest first: (target, data, rows).
        self.unsent: collections.deque[tuple[str, bytes, int]] = collections.deque()
        self.unsent_bytes = 0
        self.retry_at: float | None = None
        self.retry_delay = RETRY_FIRST_SECONDS

    def start(self) -> None:
        # pyarrow loads now, while the worker starts, not in the first file's
        # write: its import held the GIL for ~0.5 s of the requests' time.
        import pyarrow.parquet  # noqa: F401

        self.thread.start()

    def record(self, batch: Batch, predictions: np.ndarray) -> None:
        """Called per request: sample, enqueue, never block."""
        chosen = sample(batch.rows, self.settings.sample_rate, self.rng)
        if chosen is not None:
            if not len(chosen):
                return
            predictions = predictions[chosen]
            matrix = None if batch.matrix is None else batch.matrix[chosen]
            columns = {} if matrix is not None else {n: a[chosen] for n, a in batch.columns.items()}
        else:
            # A request's matrix is all the writer needs: its columns (a dict
            # and a view a column) are not kept alive until the file is written.
            matrix = batch.matrix
            columns = {} if matrix is not None else batch.columns
        if len(self.pending) >= self.settings.queue_requests:
            self.metrics.dropped.inc(len(predictions))
            return
        self.pending.append((time.time_ns() // 1_000_000, columns, predictions, matrix))

    def close(self, timeout: float = 30.0) -> None:
        """Write everything buffered and stop the thread (on shutdown)."""
        if not self.thread.is_alive():
            return
        self.stopping.set()  # the thread drains what is pending, writes it all, ends
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.error("the inference log did not finish writing within %.0f s", timeout)

    def _run(self) -> None:
        # Drain on a timer rather than waking per request: each wake-up took
        # the GIL from the event loop (12-43% of throughput in the benchmark).
        # The deque is bounded, so a tick only delays rows, never loses them.
        while not self.stopping.wait(DRAIN_SECONDS):
            started = time.thread_time()
            self._drain()
            self._write(self.buffers.due(time.monotonic()))
            if self.retry_at is not None and time.monotonic() >= self.retry_at:
                self._send_unsent()
            self.metrics.writer_cpu.inc(time.thread_time() - started)
        started = time.thread_time()
        self._drain()
        self._write(self.buffers.due(float("inf")))
        self._send_unsent(final=True)
        self.metrics.writer_cpu.inc(time.thread_time() - started)

    def _drain(self) -> None:
        """Move what requests appended into the hour buffers; write full ones."""
        now = time.monotonic()
        pending, buffers = self.pending, self.buffers
        for _ in range(len(pending)):  # only what is there now: requests keep appending
            if buffers.add(*pending.popleft(), now=now):
                self._write(buffers.due(now))

    def _write(self, ready: list[HourBuffer]) -> None:
        for buffer in ready:
            target = object_uri(self.settings.uri, buffer.hour, self.host, os.getpid(), self.seq)
            self.seq += 1
            try:
                data = parquet_bytes(
                    to_table(buffer, self.schema, self.classifier, self.model_version)
                )
            except Exception as exc:  # the log must never take the server down
                log.warning("inference log: dropped %d rows for %s: %s", buffer.rows, target, exc)
                self.metrics.dropped.inc(buffer.rows)
                continue
            self._keep(target, data, buffer.rows)
        if self.retry_at is None:  # the store is not known to be down: send now
            self._send_unsent()

    def _keep(self, target: str, data: bytes, rows: int) -> None:
        self.unsent.append((target, data, rows))
        self.unsent_bytes += len(data)
        while self.unsent_bytes > self.settings.max_unsent_bytes and len(self.unsent) > 1:
            old_target, old_data, old_rows = self.unsent.popleft()
            self.unsent_bytes -= len(old_data)
            log.warning(
                "inference log: dropped %d rows for %s: over %d bytes wait for the store",
                old_rows, old_target, self.settings.max_unsent_bytes,
            )  # fmt: skip
            self.metrics.dropped.inc(old_rows)

    def _send_unsent(self, final: bool = False) -> None:
        """Send kept files oldest first; on a failure back off (or, at shutdown, drop)."""
        while self.unsent:
            target, data, rows = self.unsent[0]
            try:
                self.write(target, data)
            except Exception as exc:
                if final:  # shutting down with the store away: count what is lost
                    lost = sum(r for _, _, r in self.unsent)
                    log.warning("inference log: dropped %d rows at shutdown: %s", lost, exc)
                    self.metrics.dropped.inc(lost)
                    self.unsent.clear()
                    self.unsent_bytes = 0
                    return
                log.warning(
                    "inference log: %d files wait for the store (retry in %.0f s): %s",
                    len(self.unsent), self.retry_delay, exc,
                )  # fmt: skip
                self.retry_at = time.monotonic() + self.retry_delay
                self.retry_delay = min(self.retry_delay * 2, RETRY_MAX_SECONDS)
                return
            self.unsent.popleft()
            self.unsent_bytes -= len(data)
            self.metrics.written.inc(rows)
        self.retry_at, self.retry_delay = None, RETRY_FIRST_SECONDS
