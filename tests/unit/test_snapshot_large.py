"""Snapshots of objects read in many batches (a rule broken only in the last
row is still found, the version is the sha256 of the bytes read) and the
fast path for clean datetime text."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flywheel.api.dataset import DatasetSpec
from flywheel.workloads import columns as columns_module
from flywheel.workloads.columns import CATEGORIES_KEPT, coerce
from flywheel.workloads.reading import SNAPSHOT_BATCH_CELLS, csv_block_bytes
from flywheel.workloads.snapshot import take_snapshot

ROWS = 800_000
COLUMNS = [
    {"name": "id", "type": "integer", "nullable": False, "min": 0},
    {"name": "score", "type": "float", "min": -10, "max": 10},
    {"name": "region", "type": "string", "allowedValues": ["north", "south"]},
    {"name": "active", "type": "boolean"},
]


def table(last: dict | None = None) -> pa.Table:
    """Clean rows; `last` replaces the last row's cells."""
    rows = np.arange(ROWS)
    columns = {
        "id": rows.astype(object),
        "score": ((rows % 200) / 20 - 5).astype(object),
        "region": np.where(rows % 2, "south", "north").astype(object),
        "active": (rows % 3 == 0).astype(object),
    }
    types = {"id": pa.int64(), "score": pa.float64(), "region": pa.string(), "active": pa.bool_()}
    for name, value in (last or {}).items():
        columns[name][-1] = value
    return pa.table({name: pa.array(cells, types[name]) for name, cells in columns.items()})


def write(data: pa.Table, path: Path, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        pacsv.write_csv(data, path)
        assert path.stat().st_size > 3 * csv_block_bytes(data.num_columns)  # many batches
    else:
        pq.write_table(data, path, row_group_size=ROWS // 4)
        assert 3 * SNAPSHOT_BATCH_CELLS // data.num_columns < ROWS  # many batches
    return path


def snapshot(path: Path, fmt: str, columns=COLUMNS):
    spec = DatasetSpec.model_validate(
        {"source": {"uri": path.as_uri(), "format": fmt}, "schema": {"columns": columns}}
    )
    return take_snapshot(spec, (path.parent / "profile.json").as_uri())


LAST_ROW = {
    "min": ({"id": -7}, "column 'id': 1 value below min 0, smallest -7"),
    "max": ({"score": 11.5}, "column 'score': 1 value above max 10, largest 11.5"),
    "allowedValues": (
        {"region": "west"},
        "column 'region': 1 value not in allowedValues [north, south], e.g. 'west'",
    ),
    "notNull": ({"id": None}, "column 'id': 1 value empty, but nullable is false"),
}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("rule", LAST_ROW)
def test_a_rule_broken_only_in_the_last_row_is_reported(tmp_path, fmt, rule):
    last, message = LAST_ROW[rule]
    path = write(table(last), tmp_path / f"data.{fmt}", fmt)

    result = snapshot(path, fmt)

    assert [(f.rule, f.message) for f in result.validation.failures] == [(rule, message)]
    assert result.rows == ROWS


def test_a_wrong_type_only_in_the_last_row_of_csv_is_reported(tmp_path):
    path = tmp_path / "data.csv"
    write(table(), path, "csv")
    path.write_bytes(path.read_bytes().replace(b"\n799999,", b"\nabc,"))

    result = snapshot(path, "csv")

    assert [(f.rule, f.message) for f in result.validation.failures] == [
        ("type", "column 'id': 1 value not of type integer, e.g. 'abc'")
    ]


def test_clean_data_passes_and_the_profile_covers_every_row(tmp_path):
    for fmt in ("csv", "parquet"):
        result = snapshot(write(table(), tmp_path / fmt / f"data.{fmt}", fmt), fmt)
        assert result.validation.passed, result.validation.failures
        columns = {c["name"]: c for c in result.profile["columnProfiles"]}
        assert (columns["id"]["min"], columns["id"]["max"]) == (0, ROWS - 1)
        assert columns["region"]["categories"] == [
            {"value": "north", "count": ROWS // 2},
            {"value": "south", "count": ROWS // 2},
        ]


def test_allowed_values_counts_and_examples_over_many_distinct_values(tmp_path):
    """More distinct values than the category table keeps: every offending
    row is counted and the examples are the first ones in the file."""
    distinct = 3 * CATEGORIES_KEPT
    cells = ["ok" if i % 2 else f"bad-{i % distinct}" for i in range(ROWS)]
    path = tmp_path / "data.csv"
    pacsv.write_csv(pa.table({"tag": cells}), path)

    result = snapshot(path, "csv", [{"name": "tag", "type": "string", "allowedValues": ["ok"]}])

    (failure,) = result.validation.failures
    assert failure.message == (
        f"column 'tag': {ROWS // 2} values not in allowedValues [ok], "
        "e.g. 'bad-0', 'bad-2', 'bad-4'"
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_version_is_the_sha256_of_the_bytes(tmp_path, fmt):
    folder = tmp_path / "data"
    paths = [write(table(), folder / f"part-{n}.{fmt}", fmt) for n in range(2)]

    result = snapshot(folder, fmt)

    digests = result.profile["objectDigests"]
    for path, digest in zip(paths, digests, strict=True):
        assert digest == {
            "key": path.name,
            "size": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    lines = "".join(json.dumps([d["key"], d["size"], d["sha256"]]) + "\n" for d in digests)
    assert result.version == hashlib.sha256(lines.encode()).hexdigest()


@pytest.mark.parametrize(
    "cells",
    [
        ["2024-01-31", "1999-12-01", None],  # clean dates: Arrow's own cast
        ["2024-01-31 08:30:00", "2024-01-31T23:59:59", None],  # clean times
        ["2024-01-31T08:30+01", "2024-01-31T08:30:00"],  # an offset, 19 characters
        ["2024-01-31T08", "2024-01-31T09"],  # hour only: Arrow reads it, the rule does not
        ["2024-02-30", "2024-01-31"],  # an impossible date
        ["2024-01-31t08:30:00", "2024-01-31 08:30:00"],  # lower-case t
        [" 2024-01-31", "2024-01-31 "],  # spaces around
    ],
)
def test_clean_datetime_columns_read_the_same_as_the_text_rule(cells, monkeypatch):
    text = pa.array(cells, pa.string())
    fast = coerce(text, "datetime")
    monkeypatch.setattr(columns_module, "_clean_datetime_column", lambda t: None)
    slow = coerce(text, "datetime")
    assert fast.values.to_pylist() == slow.values.to_pylist()
    assert fast.invalid.to_pylist() == slow.invalid.to_pylist()
