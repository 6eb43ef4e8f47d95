"""The snapshot's fast paths for min/max and value counts give Arrow's own
answers (`pc.min_max`, `pc.value_counts`), value for value and in order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flywheel.workloads.columns import extremes, value_counts


def arrow_extremes(values: pa.Array) -> tuple:
    found = pc.min_max(values).as_py()
    return found["min"], found["max"]


def dictionary(codes: np.ndarray, words: list, null_code: bool = False) -> pa.DictionaryArray:
    mask = pa.array(codes < 0) if null_code else None
    return pa.DictionaryArray.from_arrays(
        pa.array(np.maximum(codes, 0).astype(np.int32), mask=mask), pa.array(words)
    )


@pytest.mark.parametrize("seed", range(40))
def test_random_batches_count_and_bound_as_arrow_does(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    k = int(rng.integers(1, 40))
    codes = rng.integers(0, k, n)
    if seed % 2:  # codes first seen only after the leading rows
        codes[: min(n, 500)] = int(rng.integers(0, k))
    text = dictionary(codes, [f"w{i}" for i in range(k + 3)])  # unused entries too
    assert value_counts(text).to_pylist() == pc.value_counts(text).to_pylist()
    flags = pa.array(rng.random(n) < rng.random())
    assert value_counts(flags).to_pylist() == pc.value_counts(flags).to_pylist()
    for numbers in (
        pa.array(rng.normal(0, 1e6, n)),
        pa.array(rng.normal(0, 1, n).astype(np.float32)),
        pa.array(rng.normal(0, 1, n)).slice(int(rng.integers(0, n))),
    ):
        if len(numbers):
            assert extremes(numbers) == arrow_extremes(numbers)


@pytest.mark.parametrize(
    "values",
    [
        pa.array([True] * 5),
        pa.array([False]),
        pa.array([False, True, True]),
        pa.array([True, None, False]).drop_null(),
        dictionary(np.array([2, 2, 0]), ["a", "b", "c"]),
        dictionary(np.array([0, 1, 1]), ["x", "x"]),  # one word twice: counted by code
        dictionary(np.array([0, 1]), ["a", None]),  # a null word: Arrow's own path
        dictionary(np.arange(3000) % 150, [f"w{i}" for i in range(150)]),  # many words: Arrow's
        dictionary(np.r_[np.zeros(1500, int), np.arange(20)], [f"w{i}" for i in range(20)]),
        pa.array(["b", "a", "b"]),
        pa.array([3, 1, 3]),
    ],
)
def test_edge_cases_count_as_arrow_does(values):
    assert value_counts(values).to_pylist() == pc.value_counts(values).to_pylist()


@pytest.mark.parametrize(
    "values",
    [
        pa.array([1.5]),
        pa.array([-0.0, 3.0, float("inf"), -float("inf")]),
        pa.array([2.0, None, -1.0]),  # nulls: Arrow's own path
        pa.array([1e308, -1e308], pa.float64()),
        pa.array([5, -7, 2]),
    ],
)
def test_edge_cases_bound_as_arrow_does(values):
    assert extremes(values) == arrow_extremes(values)
