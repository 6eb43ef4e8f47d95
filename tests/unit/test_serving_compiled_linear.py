"""Compiled linear models answer exactly as scikit-learn does: classifiers and
regressors of many shapes, alone or after standard scaling, on inputs with
NaN, infinities and values that overflow when scaled; models it does not
compile say why and stay scikit-learn's."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import (
    LinearRegression,
    LogisticRegression,
    Perceptron,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import LinearSVC
from sklearn_models import same_answers, save

from flywheel.serving.compiled import NotCompiled, compile_model
from flywheel.serving.model import load
from flywheel.serving.signature import from_columns

CLASSIFIERS = {
    "logistic regression": lambda: LogisticRegression(max_iter=200),
    "sgd classifier": lambda: SGDClassifier(random_state=0),
    "linear svc": lambda: LinearSVC(),
    "perceptron": lambda: Perceptron(random_state=0),
}
REGRESSORS = {"linear regression": LinearRegression}


@st.composite
def fitted_models(draw):
    """A fitted linear model of a random kind and shape, and the rng its data came from."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, features = draw(st.integers(8, 80)), draw(st.integers(1, 12))
    # Columns of very different scales, as raw features are.
    X = rng.normal(0, 1, size=(rows, features)) * 10.0 ** rng.integers(-3, 4, size=features)
    name = draw(st.sampled_from(sorted(CLASSIFIERS) + sorted(REGRESSORS)))
    if name in CLASSIFIERS:
        model = CLASSIFIERS[name]()
        y = rng.integers(0, draw(st.integers(2, 4)), size=rows)
        y[:2] = [0, 1]  # at least two classes
        if draw(st.booleans()):  # class labels as text, as a user's often are
            y = np.array(["cat", "dog", "eel", "fox"])[y]
    else:
        model = REGRESSORS[name]()
        outputs = draw(st.sampled_from([None, 1, 3]))  # y of shape (rows,), (rows, 1), (rows, 3)
        y = rng.normal(size=rows if outputs is None else (rows, outputs)) * 100
    scalers = draw(st.integers(0, 2))
    options = [
        StandardScaler(with_mean=draw(st.booleans()), with_std=draw(st.booleans()))
        for _ in range(scalers)
    ]
    model = make_pipeline(*options, model) if options else model
    return model.fit(X, y), rng, X


def edge_inputs(X: np.ndarray, rng: np.random.Generator, rows: int) -> np.ndarray:
    """Rows mixing training values, zeros and values near float64's limits."""
    pool = np.concatenate([X.ravel(), rng.normal(size=50), [0.0, -0.0, 1e300, -1e300, 1e-300]])
    return rng.choice(pool, size=(rows, X.shape[1]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fitted_models(), st.integers(1, 70), st.floats(0, 0.2), st.floats(0, 0.05))
def test_compiled_linear_models_answer_as_scikit_learn(fitted, rows, nan_share, inf_share):
    model, rng, X = fitted
    inputs = edge_inputs(X, rng, rows)
    inputs[rng.random(inputs.shape) < nan_share] = np.nan
    inputs[rng.random(inputs.shape) < inf_share] = np.inf
    compiled = compile_model(model)

    same_answers(model.predict, compiled.predict, inputs)


def test_finite_rows_are_answered_by_numpy_not_scikit_learn(monkeypatch):
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(200, 5)), rng.integers(0, 3, size=200)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    compiled = compile_model(model)
    expected = model.predict(X)

    def refuse(*args, **kwargs):
        raise AssertionError("scikit-learn was asked")

    monkeypatch.setattr(model, "predict", refuse)
    for step in model:
        monkeypatch.setattr(step, "transform" if hasattr(step, "transform") else "predict", refuse)
    assert np.array_equal(compiled.predict(X), expected)
    assert np.array_equal(compiled.predict(X[:1]), expected[:1])


def test_inputs_it_does_not_reproduce_go_to_scikit_learn():
    """float32, Fortran order and DataFrames are scikit-learn's: the answers match."""
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(50, 4)), rng.integers(0, 2, size=50)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    compiled = compile_model(model)
    for other in (X.astype(np.float32), np.asfortranarray(X), pd.DataFrame(X)):
        assert np.array_equal(compiled.predict(other), model.predict(other))
    with pytest.raises(ValueError, match="features"):  # scikit-learn's own message
        compiled.predict(X[:, :3])


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (Ridge(), "Ridge is not"),
        (RidgeClassifier(), "RidgeClassifier is not"),
        (make_pipeline(MinMaxScaler(), LogisticRegression()), "MinMaxScaler before"),
    ],
)
def test_models_it_does_not_reproduce_say_why(model, reason):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    model.fit(X, (X[:, 0] > 0).astype(int))
    with pytest.raises(NotCompiled, match=reason):
        compile_model(model)


def test_the_server_loads_a_scaled_logistic_regression_compiled_and_says_so(tmp_path, caplog):
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(size=(300, 4)) * [1, 10, 100, 1000], columns=["a", "b", "c", "d"])
    y = np.where(x["a"] + x["b"] / 10 > 0, "yes", "no")
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    with caplog.at_level(logging.INFO, logger="flywheel.serve"):
        served = load(save(model, x, tmp_path / "linear"))
    assert (
        "compiled linear model serves predict: StandardScaler -> LogisticRegression, 4 features"
        in caplog.text
    )
    batch = from_columns(served.schema, x.to_dict(orient="list"))
    assert served.predict(batch)["predict"].tolist() == model.predict(x).tolist()
