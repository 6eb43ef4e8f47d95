"""The two sides of a drift check, read in bounded memory.

Current data is the service's inference log (flywheel serve's layout):

    <FLYWHEEL_CURRENT_URI>/<model version>/hour=YYYY-MM-DDTHH/*.parquet

Only the hour partitions that overlap the window are listed, of every model
version; of those files only the feature columns and `_flywheel_time` are
read, batch by batch, and only rows whose time is inside the window are kept.
The reference is the Dataset's objects (csv, parquet or jsonl), read with the
same column projection.

Each side goes through a `Reservoir`: a uniform sample of at most `capacity`
rows, chosen by the seeded random keys of the rows (bottom-k sampling), so
memory holds one batch plus the sample however many rows there are, and the
same data and seed always give the same sample, whatever the batch sizes.

Remote Parquet objects are spooled to local disk (the reader seeks to the
footer): log files of the window when their schemas are read, each deleted
once its rows are read; reference objects one at a time.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from .drift_errors import DriftError, from_storage
from .errors import WorkloadError
from .reading import (
    CHUNK_BYTES,
    PARQUET_BATCH_CELLS,
    Replay,
    csv_block_bytes,
    parse_header,
    read_header_line,
)
from .storage import (
    FileStore,
    S3Store,
    Store,
    StoredObject,
    file_path,
    is_hidden,
    open_store,
    s3_client,
    s3_message,
    s3_reason,
    split_s3_uri,
    spool,
    with_retries,
)

TIME = "_flywheel_time"  # flywheel.serving.inference_log.TIME (kept free of serving imports)
OWN_PREFIX = "_flywheel_"
HOUR_FORMAT = "%Y-%m-%dT%H"
FORMATS = ("csv", "parquet", "jsonl")
SUFFIXES = {
    "csv": (".csv", ".csv.gz"),
    "parquet": (".parquet", ".pq"),
    "jsonl": (".jsonl", ".jsonl.gz", ".ndjson", ".json"),
}
JSON_BLOCK_BYTES = 1 << 20
# What a parser raises on bad bytes; transport errors arrive as WorkloadError.
READ_ERRORS = (pa.ArrowException, ValueError, EOFError, OSError)

Kind = Literal["num", "cat"]
Side = Literal["reference", "current"]


# --- the window ------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @classmethod
    def ending(cls, end: datetime, length: timedelta) -> Window:
        end = end.astimezone(UTC) if end.tzinfo else end.replace(tzinfo=UTC)
        return cls(end - length, end)

    def hours(self) -> list[str]:
        """The hour partitions that hold rows of the window (UTC, start to end)."""
        hour = self.start.replace(minute=0, second=0, microsecond=0)
        names = []
        while hour <= self.end:
            names.append(hour.strftime(HOUR_FORMAT))
            hour += timedelta(hours=1)
        return names

    def mask(self, times: pa.Array) -> pa.Array:
        """Rows with start <= time <= end (null times are outside)."""
        if not pa.types.is_timestamp(times.type):
            raise DriftError("UnreadableData", f"{TIME} is {times.type}, not a timestamp")
        if times.type.tz is None:  # naive: UTC, as flywheel serve writes it
            kind = pa.timestamp(times.type.unit)
            start, end = self.start.replace(tzinfo=None), self.end.replace(tzinfo=None)
        else:
            kind = pa.timestamp(times.type.unit, tz="UTC")
            times = times.cast(kind)  # the same instants
            start, end = self.start, self.end
        inside = pc.and_(
            pc.greater_equal(times, pa.scalar(start, type=kind)),
            pc.less_equal(times, pa.scalar(end, type=kind)),
        )
        return pc.fill_null(inside, False)


# --- sampling --------------------------------------------------------------


class Reservoir:
    """A uniform sample of at most `capacity` rows of a stream of tables.

    Every row gets a key from a generator seeded with `seed`; the sample is
    the `capacity` rows with the smallest keys. Keys are drawn in row order,
    so the sample depends on the rows, their order and the seed only."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self._tables: list[pa.Table] = []
        self._keys: list[np.ndarray] = []
        self._held = 0
        # Once the sample is full: the largest key in it. A row whose key is
        # not below it can never be among the smallest, so it is not kept:
        # held rows stay near `capacity` (at 1,000,000 rows and a 200,000
        # sample, the reading peak fell from 364 to 315 MiB).
        self._bound = np.inf

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self.seen += table.num_rows
        keys = self.rng.random(table.num_rows)  # drawn for every row: the same keys
        if self._bound < np.inf:
            below = keys < self._bound
            table, keys = table.filter(pa.array(below)), keys[below]
            if not len(keys):
                return
        self._tables.append(table)
        self._keys.append(keys)
        self._held += len(keys)
        if self._held > self.capacity + self.capacity // 4:
            self._compact()

    def _compact(self) -> None:
        keys = np.concatenate(self._keys)
        table = pa.concat_tables(self._tables, promote_options="permissive")
        if len(keys) >= self.capacity:
            chosen = np.argpartition(keys, self.capacity - 1)[: self.capacity]
            chosen.sort()  # keep stream order
            keys, table = keys[chosen], table.take(pa.array(chosen))
            self._bound = float(keys.max())
        self._tables, self._keys, self._held = [table], [keys], len(keys)

    @property
    def sampled(self) -> bool:
        return self.seen > self.capacity

    def table(self, schema: pa.Schema) -> pa.Table:
        if not self._tables:
            return schema.empty_table()
        self._compact()
        return self._tables[0]


@dataclass
class SideData:
    frame: pd.DataFrame
    rows: int  # rows read (in the window, for current data)
    sampled: int | None  # the sample's size when a sample was taken


def side_data(reservoir: Reservoir, features: list[str], kinds: dict[str, Kind]) -> SideData:
    schema = pa.schema([pa.field(f, pa.null()) for f in features])
    table = reservoir.table(schema)
    frame = typed_frame(table.select(features).to_pandas(), kinds)
    return SideData(frame, reservoir.seen, len(frame) if reservoir.sampled else None)


def typed_frame(frame: pd.DataFrame, kinds: dict[str, Kind]) -> pd.DataFrame:
    """Numbers as float64 (unparseable text becomes missing), the rest as text;
    both sides alike, whatever their files' types (CSV is all text)."""
    typed = {}
    for name in frame.columns:
        column = frame[name]
        if kinds.get(name) == "num":
            typed[name] = pd.to_numeric(column, errors="coerce").astype("float64")
        else:
            text = column.astype("object")
            typed[name] = text.where(text.isna(), text.astype(str))
    return pd.DataFrame(typed, index=frame.index)


def release_freed_memory() -> None:
    """Give the heap's free pages back to the OS (glibc's malloc_trim).

    Reading leaves most of what the batches and the reservoir's compactions
    used free but mapped (about 170 MB for 1,000,000 logged rows), and
    Evidently's import and tests come on top of that peak. Elsewhere: nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)


def kinds_of(types: dict[str, pa.DataType], features: list[str]) -> dict[str, Kind]:
    """Numerical where the inference log (the signature's types) holds numbers."""
    kinds: dict[str, Kind] = {}
    for name in features:
        kind = types.get(name)
        numeric = kind is not None and (pa.types.is_integer(kind) or pa.types.is_floating(kind))
        kinds[name] = "num" if numeric else "cat"
    return kinds


def normalized(batch: pa.RecordBatch | pa.Table, features: list[str]) -> pa.Table:
    """The feature columns with one type per kind of value, so tables from
    files of different model versions (int here, float there) concatenate."""
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    columns = []
    for name in features:
        column = table.column(name)
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            column = column.cast(pa.float64())
        elif not pa.types.is_string(kind):
            column = column.cast(pa.string()) if not pa.types.is_null(kind) else column
        columns.append(column)
    return pa.table(columns, names=features)


# --- spooling --------------------------------------------------------------


class Spool:
    """Local paths of objects: the file itself on file://, else a copy in
    `directory`, made once (a log file's schema and its rows are read in two
    passes) and deleted by `release` once the object is read."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._copies: dict[str, Path] = {}

    def path(self, store: Store, obj: StoredObject) -> Path:
        local = store.local_path(obj)
        if local is not None:
            return local
        if obj.uri not in self._copies:
            stream = store.open(obj)
            try:
                self._copies[obj.uri] = spool(stream, self.directory)
            finally:
                stream.close()
        return self._copies[obj.uri]

    def release(self, obj: StoredObject) -> None:
        copy = self._copies.pop(obj.uri, None)
        if copy is not None:
            copy.unlink(missing_ok=True)


# --- current: the inference log -------------------------------------------


@dataclass(frozen=True)
class LogFile:
    store: Store
    obj: StoredObject


def list_current(uri: str, window: Window, endpoint: str | None) -> list[LogFile]:
    """The log files of every model version in the hour partitions of the window."""
    try:
        scheme = urllib.parse.urlsplit(uri).scheme
        if scheme == "file":
            return _list_current_files(uri, window)
        if scheme == "s3":
            return _list_current_s3(uri, window, endpoint)
    except WorkloadError as exc:
        raise from_storage(exc, "current") from exc
    raise DriftError("BadConfig", f"FLYWHEEL_CURRENT_URI must be s3:// or file://, not {uri!r}")


def _list_current_files(uri: str, window: Window) -> list[LogFile]:
    root = file_path(uri)
    if not root.is_dir():  # nothing logged yet: no rows, not an error
        return []
    found = []
    try:
        versions = sorted(p.name for p in root.iterdir() if p.is_dir() and not is_hidden(p.name))
    except PermissionError as exc:
        raise DriftError("BadCredentials", f"{uri}: permission denied") from exc
    for version in versions:
        for hour in window.hours():
            folder = root / version / f"hour={hour}"
            if folder.is_dir():
                store = FileStore(folder.as_uri())
                found += [LogFile(store, o) for o in _parquet(store.list())]
    return found


def _list_current_s3(uri: str, window: Window, endpoint: str | None) -> list[LogFile]:
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint, None)
    bucket, prefix = split_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    try:
        versions = with_retries(lambda: _model_versions(client, bucket, prefix), f"listing {uri}")
    except (BotoCoreError, ClientError) as exc:
        if s3_reason(exc) == "AccessDenied":
            raise DriftError("BadCredentials", s3_message("list", uri, endpoint, exc)) from exc
        raise DriftError("CurrentUnreachable", s3_message("list", uri, endpoint, exc)) from exc
    found = []
    for version in sorted(versions):
        for hour in window.hours():
            store = S3Store(f"s3://{bucket}/{prefix}{version}/hour={hour}/", client)
            found += [LogFile(store, o) for o in _parquet(store.list())]
    return found


def _model_versions(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/"
    )
    names = (
        c["Prefix"][len(prefix) :].rstrip("/") for p in pages for c in p.get("CommonPrefixes", [])
    )
    return [name for name in names if name and not is_hidden(name)]


def _parquet(objects: list[StoredObject]) -> list[StoredObject]:
    return sorted(
        (o for o in objects if o.key.lower().endswith(SUFFIXES["parquet"])), key=lambda o: o.uri
    )


def current_types(files: list[LogFile], spooled: Spool) -> dict[str, pa.DataType]:
    """Columns present in every log file (their first file's type), in file order."""
    types: dict[str, pa.DataType] | None = None
    for file in files:
        with _reading(file.obj, "current"):
            schema = pq.read_schema(spooled.path(file.store, file.obj))
        mine = {f.name: f.type for f in schema}
        types = mine if types is None else {n: t for n, t in types.items() if n in mine}
    return types or {}


def read_current(
    files: list[LogFile],
    features: list[str],
    window: Window,
    reservoir: Reservoir,
    spooled: Spool,
) -> None:
    """Stream the window's rows of `features` into the reservoir."""
    columns = [*features, TIME]
    batch_rows = max(1024, PARQUET_BATCH_CELLS // len(columns))
    for file in files:
        with _reading(file.obj, "current"):
            path = spooled.path(file.store, file.obj)
            parquet = pq.ParquetFile(path, buffer_size=CHUNK_BYTES, pre_buffer=False)
            if TIME not in parquet.schema_arrow.names:
                raise DriftError(
                    "UnreadableData", f"{file.obj.uri} has no {TIME} column: not an inference log"
                )
            for batch in parquet.iter_batches(
                batch_size=batch_rows, columns=columns, use_threads=False
            ):
                kept = batch.filter(window.mask(batch.column(TIME)))
                reservoir.add(normalized(kept, features))
        spooled.release(file.obj)


# --- reference: the Dataset -----------------------------------------------


@dataclass
class Reference:
    store: Store
    objects: list[StoredObject]
    data_format: str


def open_reference(
    uri: str, data_format: str, endpoint: str | None, authorization: str | None
) -> Reference:
    try:
        store = open_store(uri, endpoint=endpoint, authorization=authorization)
        listed = store.list()
    except WorkloadError as exc:
        raise from_storage(exc, "reference") from exc
    suffixes = SUFFIXES[data_format]
    objects = sorted(
        (o for o in listed if o.named or o.key.lower().endswith(suffixes)), key=lambda o: o.key
    )
    if not objects:
        raise DriftError("ReferenceNotFound", f"no {data_format} objects under {uri}")
    return Reference(store, objects, data_format)


def reference_columns(reference: Reference, spooled: Spool) -> list[str]:
    """The first object's columns (a Dataset's objects share one schema)."""
    obj = reference.objects[0]
    with _reading(obj, "reference"):
        if reference.data_format == "parquet":
            return pq.read_schema(spooled.path(reference.store, obj)).names
        with _text(reference.store, obj) as stream:
            if reference.data_format == "csv":
                return parse_header(read_header_line(stream))
            first = read_header_line(stream).split(b"\n", 1)[0]
            return list(pajson.read_json(pa.BufferReader(first)).column_names)


def read_reference(
    reference: Reference, features: list[str], reservoir: Reservoir, spooled: Spool
) -> None:
    """Stream `features` of every reference object into the reservoir."""
    for obj in reference.objects:
        with _reading(obj, "reference"):
            for batch in _reference_batches(reference, obj, features, spooled):
                reservoir.add(normalized(batch, features))
        spooled.release(obj)


def _reference_batches(
    reference: Reference, obj: StoredObject, features: list[str], spooled: Spool
) -> Iterator[pa.RecordBatch]:
    if reference.data_format == "parquet":
        path = spooled.path(reference.store, obj)
        parquet = pq.ParquetFile(path, buffer_size=CHUNK_BYTES, pre_buffer=False)
        _require(obj, parquet.schema_arrow.names, features)
        rows = max(1024, PARQUET_BATCH_CELLS // len(features))
        yield from parquet.iter_batches(batch_size=rows, columns=features, use_threads=False)
        return
    with _text(reference.store, obj) as stream:
        if reference.data_format == "csv":
            head = read_header_line(stream)
            _require(obj, parse_header(head), features)
            # Text, typed after sampling (pyarrow would type from the first block only).
            reader = pacsv.open_csv(
                Replay(head, stream),
                read_options=pacsv.ReadOptions(block_size=csv_block_bytes(len(features))),
                convert_options=pacsv.ConvertOptions(
                    include_columns=features,
                    column_types={name: pa.string() for name in features},
                    strings_can_be_null=True,
                ),
            )
            yield from reader
        else:
            reader = pajson.open_json(
                stream, read_options=pajson.ReadOptions(block_size=JSON_BLOCK_BYTES)
            )
            for batch in reader:
                # JSON lines may leave a key out: a missing feature is all nulls.
                yield pa.RecordBatch.from_arrays(
                    [
                        batch.column(name)
                        if name in batch.schema.names
                        else pa.nulls(batch.num_rows, pa.string())
                        for name in features
                    ],
                    names=features,
                )


def _require(obj: StoredObject, names: list[str], features: list[str]) -> None:
    missing = [f for f in features if f not in names]
    if missing:
        raise DriftError(
            "UnknownFeature",
            f"{obj.uri} has no column {', '.join(map(repr, missing))} "
            f"(its columns: {', '.join(names)})",
        )


@contextmanager
def _text(store: Store, obj: StoredObject) -> Iterator[Any]:
    with ExitStack() as stack:
        raw = store.open(obj)
        stack.callback(raw.close)
        stream: Any = Replay(b"", raw)
        if obj.key.lower().endswith(".gz"):
            stream = stack.enter_context(gzip.GzipFile(fileobj=stream, mode="rb"))
        yield stream


@contextmanager
def _reading(obj: StoredObject, side: Side) -> Iterator[None]:
    """Storage errors in drift terms; bad bytes are UnreadableData."""
    try:
        yield
    except DriftError:
        raise
    except WorkloadError as exc:
        raise from_storage(exc, side) from exc
    except READ_ERRORS as exc:
        text = str(exc).strip()
        detail = text.splitlines()[0][:300] if text else type(exc).__name__
        raise DriftError("UnreadableData", f"{obj.uri} is not readable: {detail}") from exc


# --- features --------------------------------------------------------------


def choose_features(
    requested: list[str] | None,
    reference: list[str],
    current: list[str] | None,
    target: str | None,
) -> list[str]:
    """The requested features, each checked on both sides; by default every
    column both sides have, except flywheel's own and the target.

    `current` is None when nothing was logged in the window: then only the
    reference can be checked."""
    if requested:
        for name in requested:
            for side, names in (("reference data", reference), ("inference log", current)):
                if names is not None and name not in names:
                    available = [n for n in names if not n.startswith(OWN_PREFIX) and n != target]
                    raise DriftError(
                        "UnknownFeature",
                        f"feature {name!r} is not a column of the {side}; "
                        f"available: {', '.join(available) or '(none)'}",
                    )
        return list(dict.fromkeys(requested))
    shared = [
        n
        for n in reference
        if (current is None or n in current) and not n.startswith(OWN_PREFIX) and n != target
    ]
    if not shared:
        raise DriftError(
            "NoCommonFeatures",
            f"the reference data ({', '.join(reference)}) and the inference log "
            f"({', '.join(current or [])}) share no feature column",
        )
    return shared


def temporary_directory() -> tempfile.TemporaryDirectory[str]:
    """Where remote Parquet is spooled: TMPDIR (an emptyDir in the pod)."""
    return tempfile.TemporaryDirectory(prefix="flywheel-drift-", dir=os.environ.get("TMPDIR"))
