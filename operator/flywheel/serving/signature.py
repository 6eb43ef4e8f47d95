"""Request data checked against the model's input signature, column by column.

A request becomes a `Batch`: one 1-D numpy array per signature column, in
signature order, typed as the signature says. Anything that does not fit
raises `InputError` naming the column (HTTP 422), so a bad request never
reaches the model. The rules follow MLflow's own schema enforcement: integers
widen to floating point, nothing else converts (no "1.5" for a double, no 1.0
for a long, no true for a number), nulls only in optional columns.

Pure: numpy only, no MLflow; `model.py` turns an MLflow signature into
`Column`s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FLOATS = {"double": np.float64, "float": np.float32}
INTEGERS = {"long": np.int64, "integer": np.int32}
NUMERIC = frozenset({*FLOATS, *INTEGERS, "boolean"})
TEXT = frozenset({"string", "binary"})
ANY = "any"  # a type we do not check (MLflow's Array, Object, Map): passed as given


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # MLflow's DataType name (double, long, string, ...) or "any"
    required: bool = True


class InputError(Exception):
    """The request does not fit the model; `field` names what is wrong."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


@dataclass(frozen=True)
class Batch:
    """Rows to predict: one array per column, all of length `rows`.

    `matrix` is the 2-D array (rows x columns, signature order) that the
    columns are views of, when the request sent whole rows of one type that
    needed no conversion: the model and the inference log take it as it is
    rather than stacking the columns again (at one row a request, stacking
    30 columns cost more than the prediction)."""

    columns: dict[str, np.ndarray]
    rows: int
    matrix: np.ndarray | None = None


def names(schema: Sequence[Column]) -> str:
    return ", ".join(c.name for c in schema)


# --- from what a protocol decoded ------------------------------------------


def from_columns(schema: Sequence[Column] | None, given: Mapping[str, Any]) -> Batch:
    """A batch from {column: values}; every column the model takes, no others."""
    if schema is None:  # no signature: the model takes what it is given
        arrays = {name: one_per_row(Column(name, ANY), values) for name, values in given.items()}
        return Batch(arrays, same_length(arrays))
    known = {c.name for c in schema}
    unknown = [name for name in given if name not in known]
    if unknown:
        raise InputError(
            f"unknown column {unknown[0]!r}; the model takes: {names(schema)}", unknown[0]
        )
    arrays: dict[str, np.ndarray] = {}
    for column in schema:
        if column.name in given:
            arrays[column.name] = convert(column, given[column.name])
        elif column.required:
            raise InputError(
                f"missing column {column.name!r} ({column.type}); the model takes: {names(schema)}",
                column.name,
            )
    rows = same_length(arrays)
    for column in schema:  # optional columns left out are all missing
        if column.name not in arrays:
            arrays[column.name] = missing(column, rows)
    return Batch({c.name: arrays[c.name] for c in schema}, rows)


def from_rows(
    schema: Sequence[Column] | None, rows: Any, columns: Sequence[str] | None = None
) -> Batch:
    """A batch from rows of values, in `columns` order (the signature's if None)."""
    if columns is None:
        if schema is None:
            raise InputError(
                "the model has no signature: send named columns "
                "(dataframe_split with columns, or records)",
                status=400,
            )
        columns = [c.name for c in schema]
    if not isinstance(rows, list | np.ndarray):
        raise InputError("rows must be a list of lists", status=400)
    if len(rows) == 0:
        raise InputError("the request has no rows")
    width = len(columns)
    table = (
        (rows if isinstance(rows, np.ndarray) else as_array(rows))
        if _rectangular(rows, width)
        else None
    )
    if table is None or table.ndim != 2 or table.shape[1] != width:
        for index, row in enumerate(rows):
            got = _len(row)
            if got < width:
                raise InputError(
                    f"row {index} has {got} values, not {width}: no value for column "
                    f"{columns[got]!r} (the columns: {', '.join(columns)})",
                    columns[got],
                )
            if got > width:
                raise InputError(
                    f"row {index} has {got} values, more than the {width} columns: "
                    f"{', '.join(columns)}"
                )
        raise InputError("rows must be a list of lists of scalars", status=400)
    views = {name: table[:, j] for j, name in enumerate(columns)}
    batch = from_columns(schema, views)
    if schema is not None and _is_matrix_of(batch, views, table):
        return Batch(batch.columns, batch.rows, table)
    return batch


def _is_matrix_of(batch: Batch, views: dict[str, np.ndarray], table: np.ndarray) -> bool:
    """True when the batch's columns are the table's own columns, in order:
    none converted (convert returns the same array), none added or moved."""
    if table.dtype == object or len(batch.columns) != len(views):
        return False
    return all(a is b for a, b in zip(batch.columns.values(), views.values(), strict=True))


def _rectangular(rows: Any, width: int) -> bool:
    if isinstance(rows, np.ndarray):
        return True
    return all(isinstance(r, list | tuple) and len(r) == width for r in rows)


def _len(row: Any) -> int:
    return len(row) if isinstance(row, list | tuple | np.ndarray) else 0


def same_length(arrays: Mapping[str, np.ndarray]) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if not lengths:
        raise InputError("the request has no columns", status=400)
    first, rows = next(iter(lengths.items()))
    for name, length in lengths.items():
        if length != rows:
            raise InputError(f"column {name!r} has {length} rows, {first!r} has {rows}", name)
    if rows == 0:
        raise InputError("the request has no rows", first)
    return rows


# --- one column ------------------------------------------------------------


def one_per_row(column: Column, values: Any) -> np.ndarray:
    """`values` as a 1-D array: scalars, one per row ([[x], [y]] is fine too)."""
    if not isinstance(values, list | tuple | np.ndarray):
        values = [values]  # one row given as {column: value}
    array = values if isinstance(values, np.ndarray) else as_array(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or (array.dtype == object and any(_nested(v) for v in array)):
        raise InputError(
            f"column {column.name!r} must hold one scalar per row, got shape {_shape(values)}",
            column.name,
        )
    return array


def as_array(values: list | tuple) -> np.ndarray:
    """JSON values as an array that keeps their types: numpy would quietly
    turn [1.5, "a"] into strings and [true, 2] into integers."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged nesting
        return np.asarray(values, dtype=object)
    kind = array.dtype.kind
    if kind == "U" and array.ndim == 1 and not all(type(v) is str for v in values):
        return np.asarray(values, dtype=object)
    if kind == "U" and array.ndim > 1:  # rows or nested columns with strings
        return _object_array(values, array.shape)
    if kind in "iuf" and any(type(v) is bool for v in _cells(values, array.ndim)):
        return _object_array(values, array.shape)
    return array


def _cells(values: Any, ndim: int) -> Any:
    return values if ndim == 1 else (v for row in values for v in _cells(row, ndim - 1))


def _object_array(values: Any, shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(shape, dtype=object)
    array[...] = values  # keeps each value's own type
    return array


def _nested(value: Any) -> bool:
    return isinstance(value, list | tuple | dict | np.ndarray)


def _shape(values: Any) -> list[int]:
    try:
        return list(np.asarray(values, dtype=object).shape)
    except ValueError:
        return [len(values), -1]


def convert(column: Column, values: Any) -> np.ndarray:
    """The column's values typed as the signature says, or an InputError."""
    array = one_per_row(column, values)
    kind, t = array.dtype.kind, column.type
    if t == ANY:
        return array
    if kind == "O":
        return _convert_objects(column, array)
    if t in FLOATS and kind in "fiu":
        return array.astype(FLOATS[t], copy=False)
    if t in INTEGERS and kind in "iu":
        return array.astype(INTEGERS[t], copy=False)
    if (t == "boolean" and kind == "b") or (t in TEXT and kind == "U"):
        return array if t == "boolean" else array.astype(object)
    if t == "datetime" and kind in "UM":
        return _datetimes(column, array)
    raise _wrong_type(column, array[0] if kind != "f" or t not in INTEGERS else _fraction(array))


def _fraction(array: np.ndarray) -> Any:
    fractional = array[array != np.floor(array)]
    return fractional[0] if len(fractional) else array[0]


def _convert_objects(column: Column, array: np.ndarray) -> np.ndarray:
    """Mixed values or nulls: check each, then type the column."""
    nulls = np.fromiter((v is None for v in array), dtype=bool, count=len(array))
    if nulls.any() and column.required:
        row = int(np.argmax(nulls))
        raise InputError(f"column {column.name!r} is required but row {row} is null", column.name)
    for value in array[~nulls]:
        if not _fits(column.type, value):
            raise _wrong_type(column, value)
    if column.type in FLOATS or (column.type in INTEGERS and nulls.any()):
        # An optional integer column with gaps becomes float, as in pandas.
        dtype = FLOATS.get(column.type, np.float64)
        return np.where(nulls, np.nan, array).astype(dtype)
    if column.type in INTEGERS:
        return array.astype(INTEGERS[column.type])
    if column.type == "datetime":
        return _datetimes(column, array)
    return array  # strings, booleans with nulls: objects, None where missing


def _fits(t: str, value: Any) -> bool:
    if t in FLOATS:
        return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool | np.bool_
        )
    if t in INTEGERS:
        return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)
    if t == "boolean":
        return isinstance(value, bool | np.bool_)
    if t in TEXT or t == "datetime":
        return isinstance(value, str | np.str_)
    return True


def _datetimes(column: Column, array: np.ndarray) -> np.ndarray:
    try:
        return np.asarray(array, dtype="datetime64[ns]")
    except ValueError as exc:
        raise InputError(
            f"column {column.name!r} must hold ISO 8601 datetimes: {exc}", column.name
        ) from exc


def _wrong_type(column: Column, value: Any) -> InputError:
    if isinstance(value, np.generic):
        value = value.item()  # 'a', not np.str_('a')
    return InputError(
        f"column {column.name!r} must be {column.type}, got {json_type(value)} {value!r}",
        column.name,
    )


def json_type(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, int | np.integer):
        return "integer"
    if isinstance(value, float | np.floating):
        return "number"
    if isinstance(value, str | np.str_):
        return "string"
    if value is None:
        return "null"
    return type(value).__name__


def missing(column: Column, rows: int) -> np.ndarray:
    if column.type in FLOATS or column.type in INTEGERS:
        return np.full(rows, np.nan)
    return np.full(rows, None, dtype=object)
