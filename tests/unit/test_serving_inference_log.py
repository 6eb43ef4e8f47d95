"""The inference log: partition naming, buffering by hour and size, the Parquet
files a drift job reads, and never blocking a request."""

from __future__ import annotations

import calendar
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flywheel.serving.inference_log import (
    DRAIN_SECONDS,
    Buffers,
    InferenceLog,
    LogSettings,
    hour_of,
    object_uri,
    sample,
)
from flywheel.serving.metrics import ServeMetrics
from flywheel.serving.signature import Batch, Column, from_rows

SCHEMA = [Column("x", "double"), Column("n", "long", required=False), Column("c", "string")]
MS = calendar.timegm((2026, 3, 1, 13, 59, 59)) * 1000


def counts() -> ServeMetrics:
    """The server's own metrics, in this process's memory."""
    return ServeMetrics("v1", "stable")


def rows(metrics: ServeMetrics, outcome: str) -> float:
    labels = {"model_version": "v1", "track": "stable", "outcome": outcome}
    return metrics.registry.get_sample_value("flywheel_serve_inference_log_rows_total", labels)


def batch(rows: int) -> Batch:
    return Batch(
        {
            "x": np.arange(rows, dtype=np.float64),
            "n": np.where(np.arange(rows) % 2 == 0, np.arange(rows), np.nan),
            "c": np.array([f"c{i}" for i in range(rows)], dtype=object),
        },
        rows,
    )


def test_partition_and_file_names():
    assert hour_of(MS) == "2026-03-01T13"
    assert hour_of(MS + 1000) == "2026-03-01T14"
    assert (
        object_uri("s3://logs/iris/", "2026-03-01T13", "pod-a", 7, 12)
        == "s3://logs/iris/hour=2026-03-01T13/pod-a-7-000012.parquet"
    )


def test_sampling():
    rng = np.random.default_rng(1)
    assert sample(10, 1.0, rng) is None
    assert len(sample(10, 0.0, rng)) == 0
    assert 350 < len(sample(1000, 0.4, rng)) < 450


def test_buffers_split_by_hour_and_flush_when_full_or_old():
    buffers = Buffers(batch_rows=3, flush_seconds=10)
    preds = np.array(["a", "b"])
    buffers.add(MS, batch(2).columns, preds, now=0)
    buffers.add(MS + 1000, batch(2).columns, preds, now=1)  # the next hour
    assert buffers.due(now=5) == []
    assert buffers.next_deadline() == 10
    buffers.add(MS, batch(2).columns, preds, now=6)
    (full,) = buffers.due(now=6)
    assert (full.hour, full.rows) == ("2026-03-01T13", 4)
    (old,) = buffers.due(now=11)
    assert (old.hour, old.rows) == ("2026-03-01T14", 2)
    assert buffers.next_deadline() is None


def test_files_have_the_signature_columns_and_ours(tmp_path: Path):
    metrics = counts()
    settings = LogSettings(uri=(tmp_path / "log").as_uri(), batch_rows=5, flush_seconds=60)
    log = InferenceLog(settings, SCHEMA, classifier=True, model_version="v1", metrics=metrics)
    log.start()
    before = time.time()
    log.record(batch(3), np.array(["a", "b", "a"]))
    log.record(batch(3), np.array(["b", "b", "a"]))  # 6 rows: over batch_rows, one file
    log.record(batch(1), np.array(["z"]))
    log.close()  # writes the last row too

    files = sorted((tmp_path / "log").glob("hour=*/*.parquet"))
    assert len(files) == 2, files
    hours = {time.strftime("hour=%Y-%m-%dT%H", time.gmtime(t)) for t in (before, time.time())}
    assert {f.parent.name for f in files} <= hours
    table = pq.read_table(files[0])
    assert table.column_names == [
        "x", "n", "c", "_flywheel_time", "_flywheel_prediction", "_flywheel_model_version",
    ]  # fmt: skip
    assert str(table.schema.field("n").type) == "int64"
    assert str(table.schema.field("_flywheel_time").type) == "timestamp[ms, tz=UTC]"
    assert table.column("n").to_pylist()[:3] == [0, None, 2]
    assert table.column("_flywheel_prediction").to_pylist() == ["a", "b", "a", "b", "b", "a"]
    assert set(table.column("_flywheel_model_version").to_pylist()) == {"v1"}
    assert pq.read_table(files[1]).num_rows == 1
    assert (rows(metrics, "written"), rows(metrics, "dropped")) == (7, 0)
    assert not list((tmp_path / "log").rglob(".*"))  # no partial files left


def test_requests_of_whole_rows_write_the_same_file_as_columns(tmp_path: Path):
    """A request's matrix (rows sent whole) is logged as its columns would be,
    alone or mixed with requests that sent columns."""
    schema = [Column("a", "double"), Column("b", "double")]
    tables = {}
    for how in ("matrix", "columns", "mixed"):
        settings = LogSettings(uri=(tmp_path / how).as_uri())
        log = InferenceLog(settings, schema, classifier=True, model_version="v1", metrics=counts())
        for i in range(4):
            matrix = np.array([[i, 10.0 * i], [i + 0.5, -1.0]])
            with_matrix = how == "matrix" or (how == "mixed" and i % 2 == 0)
            rows = from_rows(schema, matrix)
            if not with_matrix:
                rows = Batch(rows.columns, rows.rows)
            assert (rows.matrix is not None) == with_matrix
            log.record(rows, np.array(["x", "y"]))
        log.start()
        log.close()
        (file,) = (tmp_path / how).glob("hour=*/*.parquet")
        tables[how] = pq.read_table(file, columns=["a", "b", "_flywheel_prediction"]).to_pydict()
    assert tables["matrix"] == tables["columns"] == tables["mixed"]
    assert tables["matrix"]["a"] == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]
    assert tables["matrix"]["b"] == [0, -1, 10, -1, 20, -1, 30, -1]


def test_regressor_predictions_are_float(tmp_path: Path):
    settings = LogSettings(uri=(tmp_path / "log").as_uri())
    log = InferenceLog(settings, SCHEMA, classifier=False, model_version="v1", metrics=counts())
    log.start()
    log.record(batch(2), np.array([1.5, 2.5]))
    log.close()
    (file,) = (tmp_path / "log").glob("hour=*/*.parquet")
    column = pq.read_table(file).column("_flywheel_prediction")
    assert str(column.type) == "double" and column.to_pylist() == [1.5, 2.5]


@pytest.mark.parametrize(
    "labels",
    [
        np.array([3, -1, 0], dtype=np.int64),
        np.array([1, 0, 2], dtype=np.uint8),
        np.array([1.0, 0.5, 2.0]),
        np.array([True, False, True]),
        np.array(["setosa", "virginica", "setosa"]),
        np.array(["setosa", 7, None], dtype=object),
    ],
    ids=["int64", "uint8", "float", "bool", "text", "object"],
)
def test_a_classifiers_labels_are_logged_as_numpy_writes_them(tmp_path: Path, labels):
    """Each kind of label a classifier returns reaches the file as the text
    numpy gives it ("1.0", "True"), whichever path converts it."""
    settings = LogSettings(uri=(tmp_path / "log").as_uri())
    log = InferenceLog(settings, SCHEMA, classifier=True, model_version="v1", metrics=counts())
    log.record(batch(3), labels)
    log.record(batch(3), labels[::-1])
    log.start()
    log.close()
    (file,) = (tmp_path / "log").glob("hour=*/*.parquet")
    expected = [str(v) for v in [*labels.tolist(), *labels[::-1].tolist()]]
    assert pq.read_table(file).column("_flywheel_prediction").to_pylist() == expected


def test_a_missing_value_is_null_and_the_time_column_has_statistics(tmp_path: Path):
    """NaN in a feature column is written as null, in a file whose other
    values are kept; readers can prune row groups by time."""
    schema = [Column("a", "double"), Column("b", "double")]
    settings = LogSettings(uri=(tmp_path / "log").as_uri())
    log = InferenceLog(settings, schema, classifier=True, model_version="v1", metrics=counts())
    log.record(from_rows(schema, np.array([[1.0, np.nan], [2.0, 3.0]])), np.array([0, 1]))
    log.start()
    log.close()
    (file,) = (tmp_path / "log").glob("hour=*/*.parquet")
    assert pq.read_table(file, columns=["a", "b"]).to_pydict() == {"a": [1, 2], "b": [None, 3]}
    parquet = pq.ParquetFile(file)
    group = parquet.metadata.row_group(0)
    time_column = parquet.schema_arrow.names.index("_flywheel_time")
    assert group.column(time_column).statistics.has_min_max


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path):
    metrics = counts()
    settings = LogSettings(uri=(tmp_path / "log").as_uri(), queue_requests=2)
    log = InferenceLog(settings, SCHEMA, classifier=True, model_version="v1", metrics=metrics)
    # Not started: nothing takes from the queue.
    started = time.monotonic()
    for _ in range(5):
        log.record(batch(3), np.array(["a", "b", "c"]))
    assert time.monotonic() - started < 0.5
    assert rows(metrics, "dropped") == 9


def test_a_store_that_stays_down_through_shutdown_counts_the_rows_dropped(tmp_path: Path):
    metrics = counts()

    def refuse(target: str, data: bytes) -> None:
        raise OSError("store down")

    settings = LogSettings(uri="s3://bucket/log")
    log = InferenceLog(settings, SCHEMA, True, "v1", metrics, write=refuse)
    log.start()
    log.record(batch(4), np.array(list("abcd")))
    log.close()
    assert (rows(metrics, "written"), rows(metrics, "dropped")) == (0, 4)


def test_rows_logged_while_the_store_is_down_are_written_once_it_is_back(tmp_path: Path):
    metrics = counts()
    written: dict[str, bytes] = {}
    refusals = iter(range(2))  # the first two attempts fail: an outage

    def flaky(target: str, data: bytes) -> None:
        if next(refusals, None) is not None:
            raise OSError("store down")
        written[target] = data

    settings = LogSettings(uri="s3://bucket/log", flush_seconds=0.05)
    log = InferenceLog(settings, SCHEMA, True, "v1", metrics, write=flaky)
    log.start()
    for _ in range(3):
        log.record(batch(4), np.array(list("abcd")))
        # Each request's rows in a file of their own: the writer drains its queue
        # every DRAIN_SECONDS, so wait two ticks past the flush interval.
        time.sleep(2 * DRAIN_SECONDS + 0.1)
    # Back off 1 s, then 2 s: the third attempt finds the store back.
    deadline = time.monotonic() + 10
    while rows(metrics, "written") != 12 and time.monotonic() < deadline:
        time.sleep(0.1)
    log.close()
    assert (rows(metrics, "written"), rows(metrics, "dropped")) == (12, 0)
    assert len(written) == 3 and sorted(written) == list(written)  # oldest first


def test_what_waits_for_the_store_is_bounded_oldest_dropped_first(tmp_path: Path):
    metrics = counts()
    settings = LogSettings(uri="s3://bucket/log", max_unsent_bytes=1)
    log = InferenceLog(settings, SCHEMA, True, "v1", metrics, write=lambda t, d: None)
    log.retry_at = float("inf")  # the store is down: files only queue
    for rows_ in (1, 2, 3):
        log.buffers.add(MS, batch(rows_).columns, np.array(["a"] * rows_), now=0.0)
        log._write(log.buffers.due(float("inf")))
    assert [r for _, _, r in log.unsent] == [3]  # only the newest is kept
    assert rows(metrics, "dropped") == 3


@pytest.mark.parametrize("uri", ["gs://bucket/x", "/local/path"])
def test_only_s3_and_file(uri):
    with pytest.raises(ValueError, match="s3:// or file://"):
        InferenceLog(LogSettings(uri=uri), SCHEMA, True, "v1", counts())


def test_the_writers_cpu_time_is_counted(tmp_path: Path):
    """flywheel_serve_inference_log_writer_cpu_seconds: what the log's thread
    spent, so a user can see what logging costs the server."""
    metrics = counts()
    settings = LogSettings(uri=(tmp_path / "log").as_uri(), batch_rows=2_000, flush_seconds=60)
    log = InferenceLog(settings, SCHEMA, classifier=True, model_version="v1", metrics=metrics)
    labels = {"model_version": "v1", "track": "stable"}
    name = "flywheel_serve_inference_log_writer_cpu_seconds_total"
    assert metrics.registry.get_sample_value(name, labels) == 0
    cpu_before = time.process_time()
    log.start()
    for _ in range(100):
        log.record(batch(100), np.array(["a", "b"] * 50))
    log.close()
    spent = metrics.registry.get_sample_value(name, labels)
    assert rows(metrics, "written") == 10_000
    assert len(list((tmp_path / "log").glob("hour=*/*.parquet"))) == 5
    assert 0 < spent <= time.process_time() - cpu_before
