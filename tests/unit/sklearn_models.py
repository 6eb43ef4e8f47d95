"""Helpers for the tests of compiled scikit-learn models."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from flywheel.workloads.train import serialization_format


def answers(predict, X):
    try:
        return "ok", predict(X)
    except Exception as exc:
        return "error", (type(exc), str(exc))


def same_answers(expected_predict, got_predict, X) -> bool:
    """Assert both answer X alike: the same array (dtype, shape, every bit), or
    the same error (then False: there were no predictions to compare)."""
    expected, got = answers(expected_predict, X), answers(got_predict, X)
    assert got[0] == expected[0]
    if expected[0] == "error":  # the same refusal, by scikit-learn itself
        assert got[1] == expected[1]
        return False
    assert got[1].dtype == expected[1].dtype
    assert got[1].shape == expected[1].shape
    assert np.array_equal(got[1], expected[1])
    return True


def save(model, x: pd.DataFrame, path) -> str:
    """As `flywheel train` logs a model: skops, the model's types trusted."""
    serialization, trusted = serialization_format(model)
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(x, model.predict(x)),
        input_example=x.head(3),
        serialization_format=serialization,
        skops_trusted_types=trusted,
    )
    return str(path)
