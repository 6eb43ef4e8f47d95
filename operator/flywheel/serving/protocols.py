"""The two wire formats, decoded into a checked `Batch` and encoded back.

Open Inference Protocol v2 (KServe, Triton, Seldon MLServer): `inputs` is a
list of tensors `{name, shape, datatype, data}`. Tabular models take one
tensor per column, named as the column (shape [rows] or [rows, 1]), or one
tensor of whole rows (shape [rows, columns], columns in signature order).
The declared datatype must suit the column (FP64 for a long column is an
error) and the data must be what the datatype says.

MLflow's /invocations: exactly one of `dataframe_split` ({columns, data}),
`dataframe_records` ([{column: value}]), `instances` or `inputs` (records,
rows, or {column: values}). `params` is accepted and not used.

Malformed requests (not the expected structure) are 400; data that does not
fit the signature is 422, as from signature.py. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .signature import (
    FLOATS,
    INTEGERS,
    TEXT,
    Batch,
    Column,
    InputError,
    as_array,
    from_columns,
    from_rows,
)

INVOCATION_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")

# What data each v2 datatype may hold (numpy kinds of the decoded JSON); JSON
# has no float/int distinction for 2.0, so floats accept integers.
_INTS = {f"{s}INT{b}" for s in ("", "U") for b in (8, 16, 32, 64)}
_FLOATS = {"FP16", "FP32", "FP64"}
DATATYPE_KINDS = {
    **{t: "iu" for t in _INTS},
    **{t: "fiu" for t in _FLOATS},
    "BOOL": "b",
    "BYTES": "U",
}


def accepted_datatypes(column_type: str) -> set[str]:
    """The v2 datatypes a signature column takes."""
    if column_type in FLOATS:
        return _FLOATS | _INTS
    if column_type in INTEGERS:
        return set(_INTS)
    if column_type == "boolean":
        return {"BOOL"}
    if column_type in TEXT or column_type == "datetime":
        return {"BYTES"}
    return set(DATATYPE_KINDS)


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype of an output array."""
    kind, size = array.dtype.kind, array.dtype.itemsize * 8
    if kind == "f":
        return f"FP{size}"
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{size}"
    if kind == "b":
        return "BOOL"
    return "BYTES"


# --- Open Inference Protocol v2 --------------------------------------------


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: list[int]
    datatype: str
    array: np.ndarray  # the data, flat


def decode_v2(body: Any, schema: Sequence[Column] | None) -> Batch:
    if not isinstance(body, dict):
        raise InputError("the request must be a JSON object with 'inputs'", status=400)
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError("'inputs' must be a non-empty list of tensors", "inputs", status=400)
    tensors = [tensor(index, item) for index, item in enumerate(inputs)]
    columns = {c.name: c for c in schema or ()}
    first = tensors[0]
    if len(tensors) == 1 and len(first.shape) == 2 and first.name not in columns and schema:
        # One tensor of whole rows, its columns in signature order.
        for column in schema:
            check_datatype(first, column)
        return from_rows(schema, first.array.reshape(first.shape))
    given: dict[str, np.ndarray] = {}
    for t in tensors:
        if len(t.shape) != 1 and not (len(t.shape) == 2 and t.shape[1] == 1):
            raise InputError(
                f"input {t.name!r} must have shape [rows] or [rows, 1] (one column), got {t.shape}",
                t.name,
            )
        if t.name in given:
            raise InputError(f"input {t.name!r} is given twice", t.name, status=400)
        if t.name in columns:
            check_datatype(t, columns[t.name])
        given[t.name] = t.array
    return from_columns(schema, given)


def tensor(index: int, item: Any) -> Tensor:
    if not isinstance(item, dict):
        raise InputError(f"inputs[{index}] must be an object", f"inputs[{index}]", status=400)
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"inputs[{index}] has no 'name'", f"inputs[{index}]", status=400)
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise InputError(
            f"input {name!r}: 'shape' must be a list of non-negative integers", name, status=400
        )
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPE_KINDS:  # [] is unhashable
        raise InputError(
            f"input {name!r}: datatype {datatype!r} is not one of "
            f"{', '.join(sorted(DATATYPE_KINDS))}",
            name,
            status=400,
        )
    data = item.get("data")
    if not isinstance(data, list):
        raise InputError(f"input {name!r}: 'data' must be a list", name, status=400)
    array = as_array(data)
    if array.dtype == object and any(isinstance(v, list | dict) for v in array.flat):
        raise InputError(f"input {name!r}: 'data' is not a regular nested list", name)
    array = array.reshape(-1)
    if math.prod(shape) != array.size:
        raise InputError(
            f"input {name!r}: shape {shape} holds {math.prod(shape)} values, "
            f"'data' has {array.size}",
            name,
        )
    kinds = DATATYPE_KINDS[datatype]
    if array.dtype.kind not in kinds and array.dtype != object and array.size:
        raise InputError(f"input {name!r} is {datatype} but its data holds {describe(array)}", name)
    return Tensor(name, shape, datatype, array)


def describe(array: np.ndarray) -> str:
    return {"U": "strings", "b": "booleans", "f": "numbers", "i": "integers", "u": "integers"}.get(
        array.dtype.kind, str(array.dtype)
    )


def check_datatype(t: Tensor, column: Column) -> None:
    accepted = accepted_datatypes(column.type)
    if t.datatype not in accepted:
        preferred = {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32"}
        send = preferred.get(column.type) or " or ".join(sorted(accepted))
        raise InputError(
            f"input {t.name!r} is {t.datatype}, but column {column.name!r} is {column.type} "
            f"(send {send})",
            column.name,
        )


def encode_v2(
    outputs: Mapping[str, np.ndarray], model_name: str, version: str, request_id: Any
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "model_name": model_name,
        "model_version": version,
        "outputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype_of(array),
                "data": wire(array.reshape(-1)),
            }
            for name, array in outputs.items()
        ],
    }
    if isinstance(request_id, str):
        answer["id"] = request_id
    return answer


# --- MLflow /invocations ---------------------------------------------------


def decode_invocations(body: Any, schema: Sequence[Column] | None) -> Batch:
    if not isinstance(body, dict):
        raise InputError(
            f"the request must be a JSON object with one of {', '.join(INVOCATION_FORMATS)}",
            status=400,
        )
    present = [key for key in INVOCATION_FORMATS if key in body]
    if len(present) != 1:
        raise InputError(
            f"the request needs exactly one of {', '.join(INVOCATION_FORMATS)}; "
            f"got {', '.join(body) or 'an empty object'}",
            status=400,
        )
    key = present[0]
    value = body[key]
    if key == "dataframe_split":
        return _split(value, schema)
    if key == "dataframe_records":
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise InputError("dataframe_records must be a list of objects", key, status=400)
        return _records(value, schema)
    return _instances(key, value, schema)


def _split(value: Any, schema: Sequence[Column] | None) -> Batch:
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise InputError(
            "dataframe_split must be an object with 'data' (a list of rows) and 'columns'",
            "dataframe_split",
            status=400,
        )
    columns = value.get("columns")
    if columns is not None and (
        not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
    ):
        raise InputError("dataframe_split.columns must be a list of names", "columns", status=400)
    if columns is not None and len(set(columns)) != len(columns):
        raise InputError("dataframe_split.columns names a column twice", "columns", status=400)
    return from_rows(schema, value["data"], columns)


def _records(records: list[dict[str, Any]], schema: Sequence[Column] | None) -> Batch:
    if not records:
        raise InputError("the request has no rows", status=422)
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    return from_columns(schema, {n: [r.get(n) for r in records] for n in names})


def _instances(key: str, value: Any, schema: Sequence[Column] | None) -> Batch:
    if isinstance(value, dict):  # {column: values}
        return from_columns(schema, value)
    if not isinstance(value, list) or not value:
        raise InputError(f"{key} must be a non-empty list or an object of columns", key, 400)
    if all(isinstance(v, dict) for v in value):
        return _records(value, schema)
    if all(isinstance(v, list) for v in value):
        return from_rows(schema, value)
    if schema is not None and len(schema) == 1:  # a list of scalars for a one-column model
        return from_columns(schema, {schema[0].name: value})
    raise InputError(
        f"{key} must be records (objects), rows (lists) or an object of columns", key, 400
    )


def encode_invocations(outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    if len(outputs) == 1:
        return {"predictions": wire(next(iter(outputs.values())))}
    # Several named outputs (a pyfunc returning a DataFrame): records, as MLflow.
    lists = {name: wire(a) for name, a in outputs.items()}
    rows = len(next(iter(lists.values())))
    return {"predictions": [{n: v[i] for n, v in lists.items()} for i in range(rows)]}


def wire(array: np.ndarray) -> Any:
    """What orjson writes fast: numeric arrays as they are, the rest as lists."""
    if array.dtype.kind in "fiub":
        return array
    return array.tolist()
