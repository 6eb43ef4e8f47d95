"""One pass over a Dataset's objects: version, failed rules and profile.

The part of the snapshot that needs pyarrow; `snapshot` imports it when a
snapshot runs, so the `flywheel` command line and the operator do not load it.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from ..api.dataset import DatasetSpec, ValidationFailure
from .columns import ColumnStats, TableScan, dictionary_columns, parse_types
from .errors import SnapshotError
from .reading import (
    ObjectDigest,
    TypedReadFailed,
    dataset_version,
    open_object,
    select_objects,
)
from .rules import evaluate
from .storage import Store, StoredObject

log = logging.getLogger("flywheel.snapshot")

TOP_CATEGORIES = 20


@dataclass(frozen=True)
class Scanned:
    """What one pass found; `profile` is the full JSON document."""

    version: str
    rows: int
    columns: int
    null_cells: int
    bytes: int
    objects: int
    failures: list[ValidationFailure]
    profile: dict[str, Any]


def scan_source(spec: DatasetSpec, store: Store) -> Scanned:
    """Read every object of the declared format once, in key order.

    CSV objects are parsed with the declared numeric and boolean types
    (`columns.parse_types`) while their values allow it. The first object
    with a value the parser refuses (or would read differently) is read again
    from its start as text, with the statistics as they were before it, and
    so is every object after it: dirty data costs one extra partial read (a
    second download, for a remote object), and clean data the text casts."""
    source = spec.source
    objects = list_objects(store, source.uri, source.format)
    scan = TableScan(spec.schema_)
    types = parse_types(spec.schema_) if source.format == "csv" else {}
    dictionary = dictionary_columns(spec.schema_) if source.format == "parquet" else frozenset()
    digests = []
    for obj in objects:
        if types:
            before = copy.deepcopy(scan)
            try:
                digests.append(scan_object(store, obj, source.format, scan, types))
                continue
            except TypedReadFailed as exc:
                log.info("%s; reading it and the objects after it as text", exc)
                scan, types = before, {}
        digests.append(scan_object(store, obj, source.format, scan, dictionary=dictionary))
    return summarize(spec, scan, digests, evaluate(scan, spec.quality))


def list_objects(store: Store, uri: str, data_format: str) -> list[StoredObject]:
    listed = store.list()
    objects = select_objects(listed, data_format)
    if not objects:
        others = f" ({len(listed)} other objects, e.g. {listed[0].key!r})" if listed else ""
        raise SnapshotError("NoObjects", f"no {data_format} objects under {uri}{others}")
    log.info("reading %d %s objects under %s", len(objects), data_format, uri)
    return objects


def scan_object(
    store: Store,
    obj: StoredObject,
    data_format: str,
    scan: TableScan,
    types: dict[str, pa.DataType] | None = None,
    dictionary: frozenset[str] = frozenset(),
) -> ObjectDigest:
    with open_object(store, obj, data_format, types, dictionary) as opened:
        scan.start_object(obj.key, opened.names, typed=data_format == "parquet")
        for batch in opened.batches:
            scan.add_batch(batch)
        scan.finish_object()
        digest = opened.digest()
    log.info("read %s: %d bytes", obj.key, digest.size)
    return digest


# --- profile (pure) --------------------------------------------------------


def summarize(
    spec: DatasetSpec,
    scan: TableScan,
    digests: list[ObjectDigest],
    failures: list[ValidationFailure],
) -> Scanned:
    version = dataset_version(digests)
    total_bytes = sum(d.size for d in digests)
    profile = {
        "version": version,
        "source": {"uri": spec.source.uri, "format": spec.source.format},
        "rows": scan.rows,
        "columns": len(scan.columns),
        "nullCells": scan.null_cells,
        "bytes": total_bytes,
        "objects": len(digests),
        "columnProfiles": [column_profile(c, scan.rows) for c in scan.columns.values()],
        "validation": {"passed": not failures, "failures": [f.to_wire() for f in failures]},
        "objectDigests": [{"key": d.key, "size": d.size, "sha256": d.sha256} for d in digests],
    }
    return Scanned(
        version=version,
        rows=scan.rows,
        columns=len(scan.columns),
        null_cells=scan.null_cells,
        bytes=total_bytes,
        objects=len(digests),
        failures=failures,
        profile=profile,
    )


def column_profile(stats: ColumnStats, rows: int) -> dict[str, Any]:
    empty = stats.nulls + stats.absent_rows
    profile: dict[str, Any] = {
        "name": stats.name,
        "type": stats.kind,
        "declared": stats.declared is not None,
        "nulls": empty,
        "nullFraction": empty / rows if rows else 0.0,
    }
    if stats.wrong_type.count:
        profile["invalid"] = stats.wrong_type.count
    if stats.kind in ("integer", "float"):
        numbers = stats.numbers
        values = {"min": numbers.low, "max": numbers.high, "mean": numbers.mean}
        profile |= {key: json_value(value) for key, value in values.items()}
    elif stats.kind == "datetime":
        profile |= {"min": json_value(stats.times.low), "max": json_value(stats.times.high)}
    elif stats.kind in ("string", "boolean") and stats.categories.counts:
        top = stats.categories.top(TOP_CATEGORIES)
        profile["categories"] = [{"value": json_value(v), "count": n} for v, n in top]
        if stats.categories.approximate:
            profile["categoriesApproximate"] = True
        else:
            profile["distinct"] = len(stats.categories.counts)
    return profile


def json_value(value: Any) -> Any:
    """Values JSON can carry: non-finite floats and dates as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)
