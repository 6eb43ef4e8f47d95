"""Request data against the model's signature: what passes, what is refused
and how the refusal names the field."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.serving.signature import Column, InputError, from_columns, from_rows

IRIS = [
    Column("sepal_length", "double"),
    Column("sepal_width", "double"),
    Column("petal_length", "double"),
    Column("petal_width", "double"),
]
MIXED = [
    Column("age", "long"),
    Column("city", "string"),
    Column("member", "boolean"),
    Column("score", "double", required=False),
]


def refused(call, *args) -> InputError:
    with pytest.raises(InputError) as caught:
        call(*args)
    return caught.value


def test_rows_become_typed_columns_in_signature_order():
    batch = from_rows(IRIS, [[5.1, 3.5, 1, 0.2], [6.7, 3, 5.2, 2]])
    assert batch.rows == 2
    assert list(batch.columns) == [c.name for c in IRIS]
    assert all(a.dtype == np.float64 for a in batch.columns.values())
    assert batch.columns["petal_length"].tolist() == [1.0, 5.2]


def test_whole_rows_of_the_signature_types_keep_their_matrix():
    rows = [[5.1, 3.5, 1, 0.2], [6.7, 3, 5.2, 2]]
    batch = from_rows(IRIS, rows)
    assert batch.matrix is not None and batch.matrix.tolist() == [
        [5.1, 3.5, 1, 0.2],
        [6.7, 3, 5.2, 2],
    ]
    # The columns are the matrix's own: the model and the log may use either.
    assert all(np.shares_memory(batch.columns[c.name], batch.matrix) for c in IRIS)


def test_no_matrix_when_a_column_was_converted_or_moved():
    assert from_rows(MIXED, [[31, "Oslo", True, 0.5]]).matrix is None  # mixed types
    columns = ["petal_width", "sepal_length", "sepal_width", "petal_length"]
    assert from_rows(IRIS, [[0.2, 5.1, 3.5, 1.4]], columns).matrix is None  # not signature order
    floats = [Column(c.name, "float") for c in IRIS]
    assert from_rows(floats, [[0.2, 5.1, 3.5, 1.4]]).matrix is None  # float64 -> float32
    assert from_columns(IRIS, {c.name: [1.0] for c in IRIS}).matrix is None


def test_rows_with_named_columns_in_any_order():
    columns = ["petal_width", "sepal_length", "sepal_width", "petal_length"]
    batch = from_rows(IRIS, [[0.2, 5.1, 3.5, 1.4]], columns)
    assert list(batch.columns) == [c.name for c in IRIS]
    assert batch.columns["petal_width"].tolist() == [0.2]


def test_mixed_types_keep_their_own_types():
    batch = from_rows(MIXED, [[31, "Oslo", True, 0.5], [40, "Bergen", False, None]])
    assert batch.columns["age"].dtype == np.int64
    assert batch.columns["city"].tolist() == ["Oslo", "Bergen"]
    assert batch.columns["member"].tolist() == [True, False]
    assert np.isnan(batch.columns["score"][1])


def test_an_optional_column_may_be_left_out():
    batch = from_columns(MIXED, {"age": [1], "city": ["x"], "member": [True]})
    assert list(batch.columns) == ["age", "city", "member", "score"]
    assert np.isnan(batch.columns["score"][0])


@pytest.mark.parametrize(
    ("given", "field", "words"),
    [
        ({"sepal_length": [1.0], "sepal_width": [1.0], "petal_length": [1.0]}, "petal_width",
         "missing column 'petal_width'"),
        ({**{c.name: [1.0] for c in IRIS}, "colour": ["red"]}, "colour", "unknown column 'colour'"),
        ({**{c.name: [1.0] for c in IRIS}, "sepal_length": ["5.1"]}, "sepal_length",
         "must be double, got string '5.1'"),
        ({**{c.name: [1.0] for c in IRIS}, "sepal_width": [True]}, "sepal_width",
         "must be double, got boolean"),
        ({**{c.name: [1.0] for c in IRIS}, "petal_width": [1.0, 2.0]}, "petal_width",
         "has 2 rows"),
        ({**{c.name: [1.0] for c in IRIS}, "petal_length": [[1.0, 2.0]]}, "petal_length",
         "one scalar per row"),
        ({**{c.name: [1.0] for c in IRIS}, "petal_length": [None]}, "petal_length",
         "required but row 0 is null"),
    ],
)  # fmt: skip
def test_what_does_not_fit_is_refused_naming_the_column(given, field, words):
    error = refused(from_columns, IRIS, given)
    assert error.status == 422
    assert error.field == field
    assert words in error.message


def test_integers_widen_to_double_but_fractions_are_no_long():
    assert from_columns(IRIS, {c.name: [1] for c in IRIS}).columns["sepal_length"].dtype == float
    error = refused(
        from_columns, MIXED, {"age": [30, 31.5], "city": ["a", "b"], "member": [True, False]}
    )
    assert (error.field, error.message) == ("age", "column 'age' must be long, got number 31.5")


def test_a_mix_of_numbers_and_strings_names_the_odd_value():
    error = refused(from_rows, IRIS, [[5.1, 3.5, 1.4, 0.2], [5.1, "wide", 1.4, 0.2]])
    assert error.field == "sepal_width"
    assert "got string 'wide'" in error.message


def test_rows_of_the_wrong_width_name_the_row_and_the_columns():
    error = refused(from_rows, IRIS, [[5.1, 3.5, 1.4, 0.2], [5.1, 3.5, 1.4]])
    assert error.status == 422
    assert error.field == "petal_width"
    assert error.message.startswith("row 1 has 3 values, not 4: no value for column 'petal_width'")
    assert "more than the 4 columns" in refused(from_rows, IRIS, [[1, 2, 3, 4, 5]]).message


def test_no_rows_is_refused():
    assert "no rows" in refused(from_rows, IRIS, []).message


def test_without_a_signature_named_columns_pass_as_given():
    batch = from_columns(None, {"a": [1, 2], "b": ["x", "y"]})
    assert batch.rows == 2 and batch.columns["b"].tolist() == ["x", "y"]
    assert refused(from_rows, None, [[1, 2]]).status == 400
