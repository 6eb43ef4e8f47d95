"""Reading the two sides of a drift check: which log files and rows the window
takes, which columns are features, the seeded sample and its determinism,
and reading only the columns needed."""

from __future__ import annotations

import calendar
import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.serving.inference_log import (
    PREDICTION,
    TIME,
    VERSION,
    HourBuffer,
    hour_of,
    object_uri,
    parquet_bytes,
    to_table,
    write_file,
)
from flywheel.serving.signature import Column
from flywheel.workloads.drift_data import (
    Reservoir,
    Spool,
    Window,
    choose_features,
    current_types,
    kinds_of,
    list_current,
    open_reference,
    read_current,
    read_reference,
    reference_columns,
    side_data,
)
from flywheel.workloads.drift_errors import DriftError

SCHEMA = [Column("x", "double"), Column("n", "long"), Column("c", "string")]
NOW = datetime(2026, 3, 1, 14, 20, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    return calendar.timegm(moment.utctimetuple()) * 1000 + moment.microsecond // 1000


def write_log(root: Path, version: str, moment: datetime, rows: int, seq: int = 0, start=0) -> str:
    """One file as `flywheel serve` writes it: <root>/<version>/hour=<H>/<host>-<pid>-<seq>."""
    ms = epoch_ms(moment)
    values = np.arange(start, start + rows)
    columns = {
        "x": values.astype(np.float64),
        "n": values.astype(np.int64),
        "c": np.array([f"c{v % 3}" for v in values], dtype=object),
    }
    buffer = HourBuffer(hour_of(ms), 0.0, [(ms, columns, np.array(["a"] * rows), None)], rows)
    uri = object_uri((root / version).as_uri(), hour_of(ms), "pod", 1, seq)
    write_file(uri, parquet_bytes(to_table(buffer, SCHEMA, True, version)))
    return uri


# --- the window ------------------------------------------------------------


def test_window_hours_cover_start_to_end():
    window = Window.ending(NOW, timedelta(hours=1))
    assert window.start == datetime(2026, 3, 1, 13, 20, tzinfo=UTC)
    assert window.hours() == ["2026-03-01T13", "2026-03-01T14"]
    assert Window.ending(NOW, timedelta(minutes=10)).hours() == ["2026-03-01T14"]
    day = Window.ending(datetime(2026, 3, 2, 0, 0, tzinfo=UTC), timedelta(hours=2))
    assert day.hours() == ["2026-03-01T22", "2026-03-01T23", "2026-03-02T00"]


def test_window_end_without_zone_is_utc():
    assert Window.ending(datetime(2026, 3, 1, 14, 20), timedelta(hours=1)).end == NOW


def test_window_mask_keeps_rows_inside_only():
    window = Window.ending(NOW, timedelta(minutes=30))
    moments = [NOW - timedelta(minutes=31), window.start, NOW - timedelta(minutes=1), NOW]
    times = pa.array([*moments, NOW + timedelta(seconds=1), None], pa.timestamp("ms", tz="UTC"))
    assert window.mask(times).to_pylist() == [False, True, True, True, False, False]
    naive = pa.array([m.replace(tzinfo=None) for m in moments], pa.timestamp("ms"))
    assert window.mask(naive).to_pylist() == [False, True, True, True]


def test_only_the_windows_partitions_of_every_version_are_read(tmp_path):
    root = tmp_path / "inference-logs" / "ns" / "svc"
    write_log(root, "v1", NOW - timedelta(hours=3), 50)  # an older hour: not even listed
    write_log(root, "v1", NOW - timedelta(minutes=70), 40, seq=1)  # 13:10: hour listed, rows out
    write_log(root, "v1", NOW - timedelta(minutes=50), 30, seq=2)  # 13:30: in
    write_log(root, "v2", NOW - timedelta(minutes=5), 20, seq=3)  # 14:15: in, another version
    write_log(root, "v2", NOW + timedelta(minutes=5), 10, seq=4)  # after "now": out
    (root / "v2" / "hour=2026-03-01T14" / ".pod-1-000009.parquet.partial").write_bytes(b"half")
    window = Window.ending(NOW, timedelta(hours=1))

    files = list_current(root.as_uri(), window, None)

    assert [unquote(f.obj.uri).split("/svc/")[1] for f in files] == [
        "v1/hour=2026-03-01T13/pod-1-000001.parquet",
        "v1/hour=2026-03-01T13/pod-1-000002.parquet",
        "v2/hour=2026-03-01T14/pod-1-000003.parquet",
        "v2/hour=2026-03-01T14/pod-1-000004.parquet",
    ]
    reservoir = Reservoir(1000, seed=0)
    read_current(files, ["x", "c"], window, reservoir, Spool(str(tmp_path)))
    assert reservoir.seen == 50 and not reservoir.sampled
    assert reservoir.table(pa.schema([])).column_names == ["x", "c"]


def test_no_logs_yet_is_no_files(tmp_path):
    window = Window.ending(NOW, timedelta(hours=1))
    assert list_current((tmp_path / "missing").as_uri(), window, None) == []


def test_current_types_are_the_columns_of_every_file(tmp_path):
    write_log(tmp_path, "v1", NOW, 5)
    other = tmp_path / "v2" / "hour=2026-03-01T14" / "other.parquet"
    other.parent.mkdir(parents=True)
    pq.write_table(
        pa.table({"x": [1.0], TIME: pa.array([NOW], pa.timestamp("ms", tz="UTC"))}), other
    )
    files = list_current(tmp_path.as_uri(), Window.ending(NOW, timedelta(hours=1)), None)
    types = current_types(files, Spool(str(tmp_path)))
    assert list(types) == ["x", TIME]
    assert kinds_of(
        {"x": pa.float64(), "n": pa.int32(), "c": pa.string(), "b": pa.bool_()},
        ["x", "n", "c", "b"],
    ) == {"x": "num", "n": "num", "c": "cat", "b": "cat"}


# --- features --------------------------------------------------------------


def test_default_features_are_shared_columns_but_own_and_target():
    reference = ["x", "n", "c", "label", "only_in_reference"]
    current = ["x", "c", "n", TIME, PREDICTION, VERSION, "label"]
    assert choose_features(None, reference, current, "label") == ["x", "n", "c"]
    assert choose_features([], reference, current, None) == ["x", "n", "c", "label"]


def test_requested_features_are_checked_on_both_sides():
    assert choose_features(["c", "x", "c"], ["x", "c"], ["c", "x"], None) == ["c", "x"]
    with pytest.raises(DriftError) as raised:
        choose_features(["x", "z"], ["x", "c", "y"], ["x", "c", TIME], "y")
    assert raised.value.reason == "UnknownFeature"
    assert "'z'" in raised.value.message and "reference data" in raised.value.message
    assert "available: x, c" in raised.value.message
    with pytest.raises(DriftError, match="not a column of the inference log; available: x"):
        choose_features(["c"], ["x", "c"], ["x", TIME], None)
    # Nothing logged: only the reference can say a feature is unknown.
    assert choose_features(["c"], ["x", "c"], None, None) == ["c"]


def test_no_shared_column_is_an_error():
    with pytest.raises(DriftError) as raised:
        choose_features(None, ["a", "target"], ["b", TIME], "target")
    assert raised.value.reason == "NoCommonFeatures"


# --- sampling --------------------------------------------------------------


def numbers(start: int, stop: int) -> pa.Table:
    return pa.table({"v": pa.array(np.arange(start, stop, dtype=np.float64))})


def sample_of(chunks: list[tuple[int, int]], capacity: int, seed: int) -> list[float]:
    reservoir = Reservoir(capacity, seed)
    for start, stop in chunks:
        reservoir.add(numbers(start, stop))
    return reservoir.table(pa.schema([])).column("v").to_pylist()


def test_sample_is_deterministic_and_independent_of_batch_sizes():
    one = sample_of([(0, 10_000)], 500, seed=7)
    many = sample_of([(i, min(i + 337, 10_000)) for i in range(0, 10_000, 337)], 500, seed=7)
    assert len(one) == 500 and one == many == sorted(one)  # stream order kept
    assert sample_of([(0, 10_000)], 500, seed=7) == one
    assert sample_of([(0, 10_000)], 500, seed=8) != one


def test_the_sample_is_the_rows_with_the_smallest_keys():
    """Rows dropped on arrival (their key above the sample's largest) change
    nothing: the sample is exactly the rows of the 500 smallest keys."""
    keys = np.random.default_rng(3).random(10_000)  # one key a row, in row order
    expected = sorted(np.argsort(keys)[:500].tolist())
    chunks = [(i, min(i + 337, 10_000)) for i in range(0, 10_000, 337)]
    assert sample_of(chunks, 500, seed=3) == expected
    assert sample_of([(0, 10_000)], 500, seed=3) == expected


def test_sample_is_uniform_over_the_stream():
    taken = np.array(sample_of([(i, i + 1000) for i in range(0, 100_000, 1000)], 5000, seed=0))
    # Each tenth of the stream holds about a tenth of the sample.
    share = np.histogram(taken, bins=10, range=(0, 100_000))[0] / 5000
    assert np.all(np.abs(share - 0.1) < 0.02), share


def test_small_data_is_taken_whole():
    reservoir = Reservoir(100, seed=0)
    reservoir.add(numbers(0, 60))
    reservoir.add(numbers(60, 60))
    assert reservoir.seen == 60 and not reservoir.sampled
    assert reservoir.table(pa.schema([])).num_rows == 60


def test_side_data_records_the_sample_and_types_both_sides_alike():
    reservoir = Reservoir(10, seed=0)
    reservoir.add(pa.table({"x": ["1.5", "2", "oops", None] * 5, "c": ["a", None, "b", "a"] * 5}))
    side = side_data(reservoir, ["x", "c"], {"x": "num", "c": "cat"})
    assert (side.rows, side.sampled) == (20, 10)
    assert side.frame["x"].dtype == np.float64
    assert set(side.frame["x"].dropna()) <= {1.5, 2.0}
    assert side.frame["c"].dropna().isin(["a", "b"]).all()
    empty = side_data(Reservoir(10, 0), ["x"], {"x": "num"})
    assert (empty.rows, empty.sampled, len(empty.frame)) == (0, None, 0)


# --- the reference ---------------------------------------------------------


def read_all(uri: str, data_format: str, features: list[str], tmp_path: Path) -> pd.DataFrame:
    reference = open_reference(uri, data_format, None, None)
    assert reference_columns(reference, Spool(str(tmp_path)))[:2] == ["x", "c"]
    reservoir = Reservoir(1000, seed=0)
    read_reference(reference, features, reservoir, Spool(str(tmp_path)))
    return side_data(reservoir, features, {"x": "num", "c": "cat"}).frame


def test_reference_formats_read_only_the_features(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2.5, None], "c": ["a", "b", "a"], "wide": ["..."] * 3})
    (tmp_path / "csv").mkdir()
    frame.to_csv(tmp_path / "csv" / "part-0.csv", index=False)
    with gzip.open(tmp_path / "csv" / "part-1.csv.gz", "wt") as out:
        frame.to_csv(out, index=False)
    (tmp_path / "parquet").mkdir()
    frame.to_parquet(tmp_path / "parquet" / "data.parquet")
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "jsonl" / "data.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [{"x": 1.0, "c": "a"}, {"x": 2.5, "c": "b"}, {"c": "a"}])
    )
    for data_format, rows in (("csv", 6), ("parquet", 3), ("jsonl", 3)):
        read = read_all((tmp_path / data_format).as_uri(), data_format, ["x", "c"], tmp_path)
        assert list(read.columns) == ["x", "c"] and len(read) == rows, data_format
        assert read["x"].tolist()[:2] == [1.0, 2.5] and read["x"].isna().sum() == rows // 3


def test_reference_without_a_feature_names_it(tmp_path):
    pd.DataFrame({"x": [1.0], "c": ["a"]}).to_csv(tmp_path / "d.csv", index=False)
    reference = open_reference(tmp_path.as_uri(), "csv", None, None)
    with pytest.raises(DriftError) as raised:
        read_reference(reference, ["x", "zz"], Reservoir(10, 0), Spool(str(tmp_path)))
    assert raised.value.reason == "UnknownFeature" and "'zz'" in raised.value.message


def test_reference_problems_have_drift_reasons(tmp_path):
    with pytest.raises(DriftError) as raised:
        open_reference((tmp_path / "nothing").as_uri(), "csv", None, None)
    assert raised.value.reason == "ReferenceUnreachable"
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DriftError) as raised:
        open_reference(tmp_path.as_uri(), "csv", None, None)
    assert raised.value.reason == "ReferenceNotFound"
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    reference = open_reference(tmp_path.as_uri(), "parquet", None, None)
    with pytest.raises(DriftError) as raised:
        reference_columns(reference, Spool(str(tmp_path)))
    assert raised.value.reason == "UnreadableData"
