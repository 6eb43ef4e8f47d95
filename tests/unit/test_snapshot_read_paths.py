"""A local CSV is read by Arrow from its path and hashed in a thread beside;
a stream (S3, HTTP, gzip) is hashed as the parser reads it. Both must give
the same snapshot, and a read that ends early must not hash on regardless."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from contextlib import ExitStack
from pathlib import Path

import pyarrow as pa
import pytest

from flywheel.api.dataset import DatasetSpec
from flywheel.workloads import reading
from flywheel.workloads.scan import scan_source
from flywheel.workloads.storage import FileStore, StoredObject

COLUMNS = [
    {"name": "id", "type": "integer", "nullable": False},
    {"name": "score", "type": "float"},
    {"name": "city, quoted", "type": "string"},
    {"name": "active", "type": "boolean"},
]


class StreamOnlyStore(FileStore):
    """The same files, offered as streams only, as a remote store offers them."""

    def local_path(self, obj: StoredObject) -> Path | None:
        return None


def write_objects(folder: Path) -> list[Path]:
    """Two CSV objects: the first clean, with a byte-order mark and a quoted
    header; the second with a score the typed parser refuses far down, so
    it is read again as text."""
    folder.mkdir()
    header = '\ufeffid,score,"city, quoted",active\n'
    clean = "".join(f'{i},{i / 7:.4f},"Zürich, {i % 3}",{i % 2 == 0}\n' for i in range(20_000))
    dirty = "".join(f"{i},{'abc' if i == 19_000 else i / 3},Basel,yes\n" for i in range(20_000))
    paths = [folder / "a.csv", folder / "b.csv"]
    paths[0].write_text(header + clean, encoding="utf-8")
    paths[1].write_text(header.lstrip("\ufeff") + dirty, encoding="utf-8")
    return paths


def test_a_local_csv_and_the_same_bytes_as_a_stream_give_the_same_snapshot(tmp_path):
    paths = write_objects(tmp_path / "data")
    spec = DatasetSpec.model_validate(
        {
            "source": {"uri": (tmp_path / "data").as_uri() + "/", "format": "csv"},
            "schema": {"columns": COLUMNS},
        }
    )

    local = scan_source(spec, FileStore(spec.source.uri))
    streamed = scan_source(spec, StreamOnlyStore(spec.source.uri))

    assert dataclasses.asdict(local) == dataclasses.asdict(streamed)
    assert local.profile["objectDigests"] == [
        {
            "key": p.name,
            "size": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in paths
    ]
    assert local.rows == 40_000
    profiles = {c["name"]: c for c in local.profile["columnProfiles"]}
    assert profiles["score"]["invalid"] == 1  # 'abc', found by the text reading
    assert profiles["city, quoted"]["categories"][0] == {"value": "Basel", "count": 20_000}


def test_a_read_that_ends_early_stops_hashing_its_file(tmp_path, monkeypatch):
    big = tmp_path / "big.csv"
    with big.open("wb") as handle:  # sparse: 256 MiB of zeros that take no disk
        handle.truncate(256 * reading.CHUNK_BYTES)
    chunks = []
    plain_read = reading.HashingReader.read

    def slow_read(self, size=-1):
        chunks.append(size)
        time.sleep(0.005)  # the whole file would take over a second
        return plain_read(self, size)

    monkeypatch.setattr(reading.HashingReader, "read", slow_read)

    with ExitStack() as stack:
        digest = reading.hashed_in_background(
            stack, big, StoredObject("big.csv", big.as_uri(), None), "csv"
        )
    # (As when the parser fails on the file's first block.)

    with pytest.raises(reading.HashStopped):
        digest()
    assert len(chunks) < 100


def test_parser_blocks_are_joined_in_order_for_the_statistics():
    blocks = [pa.record_batch({"n": list(range(i * 3, i * 3 + 3))}) for i in range(10)]

    joined = list(reading.gathered(blocks, 4))

    assert [b.num_rows for b in joined] == [12, 12, 6]
    assert [n for b in joined for n in b.column(0).to_pylist()] == list(range(30))
