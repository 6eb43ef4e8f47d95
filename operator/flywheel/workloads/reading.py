"""Bytes to record batches, with the content hash taken on the way.

Memory stays bounded whatever the size of the data: CSV is parsed as a stream
in small blocks, Parquet in batches of a bounded number of cells. A stream
(S3, HTTP) is hashed as it is read, in one pass; a local file is hashed by a
thread beside its parser, which reads it again from the page cache.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .columns import FALSE_WORDS, TRUE_WORDS, parsed_as_text_would_be
from .errors import SnapshotError
from .prefetch import prefetched
from .storage import CHUNK_BYTES, Readable, Store, StoredObject, spool

# One CSV block becomes one batch. pyarrow's streaming reader reads up to 32
# blocks ahead in the background (Arrow's kDefaultBackgroundMaxQ, not settable
# from Python), so the block size is what bounds memory. Small blocks keep that
# low; wide tables get larger ones so a batch still has enough rows to make
# the per-batch, per-column work worth it.
CSV_BLOCK_BYTES_PER_COLUMN = 48 << 10
CSV_BLOCK_BYTES_MIN = 256 << 10
CSV_BLOCK_BYTES_MAX = 8 << 20
# Parquet batches hold about this many cells, whatever the table's width
# (the drift check's reading uses it too).
PARQUET_BATCH_CELLS = 160_000
# The snapshot's batches are larger: its statistics cost a few compute calls
# per column and batch whatever the length, and 640k cells took a fifth off a
# Parquet snapshot's CPU for about 15 MiB more peak memory (1M saved no more
# and cost 25 MiB more).
SNAPSHOT_BATCH_CELLS = 640_000
# The snapshot's statistics cost a few compute calls per column and batch
# whatever its length, so its CSV batches are this many parser blocks joined
# (~25,000 rows of the bench's 14 columns). With the joining and the typed
# parse's check off the parsing thread (open_object), the bench's 512 MiB CSV
# snapshot: 2.95 -> 2.76 s, 4.50 -> 4.03 s of CPU, peak RSS 158 -> 171-191 MiB.
CSV_BLOCKS_PER_BATCH = 4
# A header line longer than this is not a CSV header.
MAX_HEADER_BYTES = 1 << 20

EXTENSIONS = {"csv": (".csv", ".csv.gz"), "parquet": (".parquet", ".pq")}


@dataclass(frozen=True)
class ObjectDigest:
    key: str
    size: int
    sha256: str


def dataset_version(digests: Iterable[ObjectDigest]) -> str:
    """sha256 over (key, size, content hash) of every object, in key order.

    Keys are relative to the source URI, so copying the data elsewhere keeps
    its version; JSON lines keep odd characters in keys unambiguous."""
    total = hashlib.sha256()
    for digest in sorted(digests, key=lambda d: d.key):
        line = json.dumps([digest.key, digest.size, digest.sha256], ensure_ascii=False)
        total.update(line.encode() + b"\n")
    return total.hexdigest()


def select_objects(objects: Iterable[StoredObject], data_format: str) -> list[StoredObject]:
    """The objects of the declared format, sorted by key. An object the URI
    names itself is taken whatever its extension: the user pointed at it."""
    suffixes = EXTENSIONS[data_format]
    chosen = [o for o in objects if o.named or o.key.lower().endswith(suffixes)]
    return sorted(chosen, key=lambda o: o.key)


class HashingReader:
    """Passes bytes through and hashes and counts them.

    Only `read`, no io.RawIOBase: pyarrow wraps the bytes `read` returns
    without copying, where RawIOBase.read would copy every block twice."""

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._sha.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def drain(self, stop: threading.Event | None = None) -> None:
        """Read to the end: parsers may stop before EOF (trailing bytes after
        a gzip member), and the hash covers every byte. Once `stop` is set,
        HashStopped after the chunk under way."""
        while self.read(CHUNK_BYTES):
            if stop is not None and stop.is_set():
                raise HashStopped

    def digest(self, key: str) -> ObjectDigest:
        return ObjectDigest(key, self.size, self._sha.hexdigest())


class HashStopped(Exception):
    """The object's reading ended first (an error): its hash is not wanted."""


def hash_file(path: Path, key: str, stop: threading.Event | None = None) -> ObjectDigest:
    with path.open("rb") as handle:
        reader = HashingReader(handle)
        reader.drain(stop)
    return reader.digest(key)


def hashed_in_background(
    stack: ExitStack, path: Path, obj: StoredObject, data_format: str
) -> Callable[[], ObjectDigest]:
    """Hash a local file in a thread while it is parsed; both release the GIL,
    so on two cores the hash costs no wall time. Returns the digest's getter.
    Leaving `stack` early (the parse failed) stops the hash after a chunk,
    rather than reading the rest of a large file for a digest nobody wants."""
    hashing = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="hash"))
    stop = threading.Event()
    stack.callback(stop.set)  # runs before the executor waits for the thread
    future = hashing.submit(hash_file, path, obj.key, stop)

    def digest() -> ObjectDigest:
        try:
            return future.result()
        except READ_ERRORS as exc:
            raise unreadable(obj, data_format, exc) from exc

    return digest


# --- CSV -------------------------------------------------------------------


class Replay:
    """Serves bytes already read (the header) before the rest of a stream."""

    def __init__(self, head: bytes, rest: Readable) -> None:
        self._head = head
        self._rest = rest
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        cut = len(self._head) if size < 0 else size
        data, self._head = self._head[:cut], self._head[cut:]
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def read_header_line(stream: Readable) -> bytes:
    head = b""
    while b"\n" not in head and len(head) < MAX_HEADER_BYTES:
        chunk = stream.read(64 * 1024)
        if not chunk:
            break
        head += chunk
    return head


def parse_header(head: bytes) -> list[str]:
    line = head.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").rstrip("\r")
    names = next(csv.reader([line]), [])
    if not any(names):
        raise ValueError("the file is empty or its first line is not a header")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate column names in the header: {', '.join(duplicates)}")
    return names


def csv_block_bytes(columns: int) -> int:
    wanted = columns * CSV_BLOCK_BYTES_PER_COLUMN
    return min(max(wanted, CSV_BLOCK_BYTES_MIN), CSV_BLOCK_BYTES_MAX)


def csv_batches(
    stream: Readable, types: Mapping[str, pa.DataType] | None = None
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """Column names and batches: the columns `types` names as those types,
    every other column as text.

    Text, not pyarrow's inference, because it infers types from the first block
    only and fails on a later block that disagrees (an integer column with one
    '1.5' far down); typing text is done per batch by `columns.coerce`, which
    counts such values. A declared type given here makes the parser fail on
    such a value instead (ArrowInvalid): the caller reads the object again as
    text (scan.py)."""
    head = read_header_line(stream)
    return csv_reader(Replay(head, stream), parse_header(head), types)


def csv_reader(
    source: Readable | str, names: list[str], types: Mapping[str, pa.DataType] | None = None
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """`csv_batches` for a header already parsed; `source` gives the whole
    file, header included, as a stream or as a local path Arrow reads itself."""
    types = types or {}
    reader = pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=csv_block_bytes(len(names))),
        convert_options=pacsv.ConvertOptions(
            column_types={name: types.get(name, pa.string()) for name in names},
            # Empty cells and NA/NULL/NaN are missing values, as in pandas.
            strings_can_be_null=True,
            true_values=TRUE_WORDS,
            false_values=FALSE_WORDS,
        ),
    )
    return names, iter(reader)


# --- Parquet ---------------------------------------------------------------


def parquet_batches(
    path: Path, dictionary: Collection[str] = ()
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """Column names and batches; the text columns named in `dictionary` stay
    dictionary-encoded, as Parquet stores them, instead of being expanded."""
    # buffer_size streams column chunks instead of loading a row group whole.
    # Columns are decoded in parallel, on the two threads the snapshot gives
    # Arrow (allocator.bound_arrow_threads): on one thread decoding was the
    # snapshot's critical path (1.1 s of the bench's 1.5 s; 0.7 s on two),
    # for ~10 MiB more peak memory. Memory stays bounded by the batch
    # (test_memory_stays_bounded_on_a_large_file).
    parquet = pq.ParquetFile(path, buffer_size=CHUNK_BYTES, pre_buffer=False)
    encoded = [
        f.name for f in parquet.schema_arrow if f.name in dictionary and pa.types.is_string(f.type)
    ]
    if encoded:
        parquet = pq.ParquetFile(
            path, buffer_size=CHUNK_BYTES, pre_buffer=False, read_dictionary=encoded
        )
    names = parquet.schema_arrow.names
    rows = max(1024, SNAPSHOT_BATCH_CELLS // max(len(names), 1))
    return names, parquet.iter_batches(batch_size=rows, use_threads=True)


# --- one object ------------------------------------------------------------

# What a parser raises on bad bytes (ArrowInvalid is a ValueError; a bad gzip
# stream an OSError). Transport errors arrive as SnapshotError and keep theirs.
READ_ERRORS = (pa.ArrowException, ValueError, EOFError, OSError)


class TypedReadFailed(Exception):
    """A CSV object read with parser types met a value the parser refused, or
    read differently from the text rules: read it again as text."""


@dataclass
class OpenedObject:
    names: list[str]
    batches: Iterator[pa.RecordBatch]
    digest: Callable[[], ObjectDigest]  # call after the batches are consumed


@contextmanager
def open_object(
    store: Store,
    obj: StoredObject,
    data_format: str,
    types: Mapping[str, pa.DataType] | None = None,
    dictionary: Collection[str] = (),
) -> Iterator[OpenedObject]:
    """Open one object for reading; bad bytes become UnreadableData. CSV
    columns named in `types` are parsed as those types; reading its batches
    raises TypedReadFailed when that cannot stand for the text reading.
    Parquet text columns named in `dictionary` come dictionary-encoded."""
    with ExitStack() as stack:
        try:
            if data_format == "csv":
                opened = _open_csv(stack, store, obj, types)
            else:
                opened = _open_parquet(stack, store, obj, dictionary)
        except READ_ERRORS as exc:  # (the parser reads the first block at once)
            raise _read_error(exc, obj, data_format, types) from exc
        # Parse ahead in a thread while the caller works on a batch; leaving
        # the block stops the thread before the object's stream closes. That
        # thread only parses: a CSV object's one parsing thread sets the
        # snapshot's pace (the statistics thread waited on it 60% of the time
        # on two cores), so joining and checking batches are the caller's.
        if data_format == "csv":
            parsed = stack.enter_context(prefetched(opened.batches, CSV_BLOCKS_PER_BATCH))
            batches: Iterator[pa.RecordBatch] = gathered(parsed, CSV_BLOCKS_PER_BATCH)
        else:
            batches = stack.enter_context(prefetched(opened.batches))
        opened.batches = _mapped(batches, obj, data_format, types)
        yield opened


def gathered(batches: Iterable[pa.RecordBatch], count: int) -> Iterator[pa.RecordBatch]:
    """Every `count` consecutive batches joined into one."""
    pending: list[pa.RecordBatch] = []
    for batch in batches:
        pending.append(batch)
        if len(pending) == count:
            yield pa.concat_batches(pending)
            pending = []
    if pending:
        yield pa.concat_batches(pending)


def _mapped(
    batches: Iterator[pa.RecordBatch],
    obj: StoredObject,
    data_format: str,
    types: Mapping[str, pa.DataType] | None,
) -> Iterator[pa.RecordBatch]:
    try:
        for batch in batches:
            if types and (why := parsed_as_text_would_be(batch, types)):
                raise TypedReadFailed(f"{obj.key}: {why}")
            yield batch
    except READ_ERRORS as exc:
        raise _read_error(exc, obj, data_format, types) from exc


def _read_error(
    exc: BaseException,
    obj: StoredObject,
    data_format: str,
    types: Mapping[str, pa.DataType] | None,
) -> Exception:
    if types and isinstance(exc, pa.ArrowInvalid):
        # A value the typed parser refused, or bad bytes: reading the object
        # as text tells which (and names the bad bytes as it always did).
        return TypedReadFailed(f"{obj.key}: {_first_line(exc)}")
    return unreadable(obj, data_format, exc)


def _open_csv(
    stack: ExitStack, store: Store, obj: StoredObject, types: Mapping[str, pa.DataType] | None
) -> OpenedObject:
    path = store.local_path(obj)
    if path is not None and not obj.key.lower().endswith(".gz"):
        return _open_local_csv(stack, store, obj, path, types)
    # A stream (S3, HTTP, gzip) is hashed as the parser reads it, on the
    # parser's reading thread: read once, whatever its size.
    hasher = HashingReader(_opened(stack, store, obj))
    text: Readable = hasher
    if obj.key.lower().endswith(".gz"):
        text = stack.enter_context(gzip.GzipFile(fileobj=hasher, mode="rb"))
    names, batches = csv_batches(text, types)

    def digest() -> ObjectDigest:
        hasher.drain()
        return hasher.digest(obj.key)

    return OpenedObject(names, batches, digest)


def _open_parquet(
    stack: ExitStack, store: Store, obj: StoredObject, dictionary: Collection[str]
) -> OpenedObject:
    path = store.local_path(obj)
    if path is None:
        # Remote Parquet is spooled to local disk (hashed on the way) because
        # the reader seeks; disk use is one object, memory stays one batch.
        hasher = HashingReader(_opened(stack, store, obj))
        path = spool(hasher)
        stack.callback(path.unlink, missing_ok=True)
        digest = hasher.digest(obj.key)
        names, batches = parquet_batches(path, dictionary)
        return OpenedObject(names, batches, lambda: digest)
    # A local file is hashed in a thread while it is parsed (it was a serial pass).
    digest = hashed_in_background(stack, path, obj, "parquet")
    names, batches = parquet_batches(path, dictionary)
    return OpenedObject(names, batches, digest)


def _open_local_csv(
    stack: ExitStack,
    store: Store,
    obj: StoredObject,
    path: Path,
    types: Mapping[str, pa.DataType] | None,
) -> OpenedObject:
    """Arrow reads a local file itself, without Python's reads in between, and
    a thread hashes it beside. On the bench's 512 MiB: 3% less CPU (4.19 ->
    4.06 s), the same wall time: Arrow's one parsing thread sets that."""
    header = store.open(obj)  # the store's errors for a file it cannot open
    try:
        names = parse_header(read_header_line(header))
    finally:
        header.close()
    digest = hashed_in_background(stack, path, obj, "csv")
    names, batches = csv_reader(str(path), names, types)
    return OpenedObject(names, batches, digest)


def _opened(stack: ExitStack, store: Store, obj: StoredObject) -> Readable:
    stream = store.open(obj)
    stack.callback(stream.close)
    return stream


def unreadable(obj: StoredObject, data_format: str, exc: BaseException) -> SnapshotError:
    detail = _first_line(exc)
    return SnapshotError("UnreadableData", f"{obj.uri} is not readable as {data_format}: {detail}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
