"""The two wire formats: Open Inference Protocol v2 and MLflow /invocations."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from flywheel.serving.protocols import (
    decode_invocations,
    decode_v2,
    encode_invocations,
    encode_v2,
)
from flywheel.serving.signature import Column, InputError

IRIS = [
    Column("sepal_length", "double"),
    Column("sepal_width", "double"),
    Column("petal_length", "double"),
    Column("petal_width", "double"),
]
NAMES = [c.name for c in IRIS]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
EXPECTED = {name: [row[j] for row in ROWS] for j, name in enumerate(NAMES)}


def as_lists(batch) -> dict:
    return {name: array.tolist() for name, array in batch.columns.items()}


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": NAMES, "data": ROWS}},
        {"dataframe_split": {"columns": NAMES[::-1], "data": [r[::-1] for r in ROWS]}},
        {"dataframe_split": {"data": ROWS}},
        {"dataframe_records": [dict(zip(NAMES, row, strict=True)) for row in ROWS]},
        {"instances": [dict(zip(NAMES, row, strict=True)) for row in ROWS]},
        {"instances": ROWS},
        {"inputs": EXPECTED},
        {"inputs": ROWS, "params": {"ignored": True}},
    ],
)
def test_every_invocations_format_decodes_to_the_same_rows(body):
    assert as_lists(decode_invocations(body, IRIS)) == EXPECTED


def test_v2_one_tensor_per_column_or_one_of_whole_rows():
    per_column = {
        "inputs": [
            {"name": n, "shape": [2], "datatype": "FP64", "data": v} for n, v in EXPECTED.items()
        ]
    }
    assert as_lists(decode_v2(per_column, IRIS)) == EXPECTED
    column_shaped = {
        "inputs": [
            {"name": n, "shape": [2, 1], "datatype": "FP32", "data": [[x] for x in v]}
            for n, v in EXPECTED.items()
        ]
    }
    assert as_lists(decode_v2(column_shaped, IRIS)) == EXPECTED
    flat = [x for row in ROWS for x in row]
    whole = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": flat}]}
    assert as_lists(decode_v2(whole, IRIS)) == EXPECTED
    nested = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": ROWS}]}
    assert as_lists(decode_v2(nested, IRIS)) == EXPECTED


def v2_error(body) -> InputError:
    with pytest.raises(InputError) as caught:
        decode_v2(body, IRIS)
    return caught.value


def tensor(name, data, datatype="FP64", shape=None):
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


def test_v2_refusals_name_the_input():
    good = [tensor(n, v[:1]) for n, v in EXPECTED.items()]
    wrong_type = [tensor("sepal_length", ["x"], "BYTES"), *good[1:]]
    error = v2_error({"inputs": wrong_type})
    assert (error.status, error.field) == (422, "sepal_length")
    assert "is BYTES, but column 'sepal_length' is double" in error.message

    lying = [tensor("sepal_length", ["x"], "FP64"), *good[1:]]
    assert "is FP64 but its data holds strings" in v2_error({"inputs": lying}).message

    short = [tensor("sepal_length", [1.0], shape=[2]), *good[1:]]
    error = v2_error({"inputs": short})
    assert error.field == "sepal_length" and "shape [2] holds 2 values" in error.message

    cube = [tensor("sepal_length", [1.0, 2.0], shape=[1, 2, 1]), *good[1:]]
    assert v2_error({"inputs": cube}).field == "sepal_length"

    assert v2_error({"inputs": good[:3]}).field == "petal_width"
    assert v2_error({"inputs": [*good, tensor("extra", [1.0])]}).field == "extra"

    whole_ints = [tensor("x", [1, 2, 3, 4], "BOOL", shape=[1, 4])]
    assert v2_error({"inputs": whole_ints}).status == 422


@pytest.mark.parametrize(
    "body",
    [[], {"inputs": []}, {"inputs": [1]}, {"inputs": [{"name": "a"}]},
     {"inputs": [tensor("a", [1.0], "FLOAT64")]}],
)  # fmt: skip
def test_v2_malformed_requests_are_400(body):
    assert v2_error(body).status == 400


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {"instances": ROWS, "inputs": ROWS},
        {"dataframe_split": ROWS},
        {"dataframe_split": {"columns": ["a", "a"], "data": []}},
        {"dataframe_records": [1, 2]},
    ],
)
def test_invocations_malformed_requests_are_400(body):
    with pytest.raises(InputError) as caught:
        decode_invocations(body, IRIS)
    assert caught.value.status == 400


def wire_json(answer: dict) -> object:
    """The answer as the client reads it."""
    return orjson.loads(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY))


def test_encodings():
    outputs = {"predict": np.array(["setosa", "virginica"])}
    v2 = encode_v2(outputs, "iris", "iris-v1", "req-1")
    assert v2["outputs"] == [
        {"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["setosa", "virginica"]}
    ]
    assert (v2["model_name"], v2["model_version"], v2["id"]) == ("iris", "iris-v1", "req-1")
    values = {"predict": np.array([1.5, 2.0])}
    v2 = wire_json(encode_v2(values, "d", "v", None))
    assert v2["outputs"][0]["datatype"] == "FP64" and v2["outputs"][0]["data"] == [1.5, 2.0]
    assert "id" not in v2
    assert encode_invocations(outputs) == {"predictions": ["setosa", "virginica"]}
    two = {"label": np.array(["a", "b"]), "score": np.array([0.1, 0.9])}
    assert wire_json(encode_invocations(two)) == {
        "predictions": [{"label": "a", "score": 0.1}, {"label": "b", "score": 0.9}]
    }
