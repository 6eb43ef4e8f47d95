"""Compiled tree ensembles answer exactly as scikit-learn does: random forests
and trees of many shapes, random inputs with thresholds hit exactly, NaN,
huge values; models it does not compile say why and stay scikit-learn's."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn_models import same_answers, save

from flywheel.serving.compiled import NotCompiled, compile_model
from flywheel.serving.model import load
from flywheel.serving.signature import from_columns

KINDS = {
    "random forest classifier": RandomForestClassifier,
    "random forest regressor": RandomForestRegressor,
    "extra trees classifier": ExtraTreesClassifier,
    "extra trees regressor": ExtraTreesRegressor,
    "decision tree classifier": DecisionTreeClassifier,
    "decision tree regressor": DecisionTreeRegressor,
}
ENSEMBLES = {
    RandomForestClassifier,
    RandomForestRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
}


@st.composite
def fitted_models(draw):
    """A fitted model of a random kind and shape, and the rng its data came from."""
    kind = KINDS[draw(st.sampled_from(sorted(KINDS)))]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, features = draw(st.integers(4, 80)), draw(st.integers(1, 6))
    # Few distinct values a column: ties and thresholds between repeated values.
    X = rng.choice(rng.normal(0, 10, size=draw(st.integers(2, 30))), size=(rows, features))
    if draw(st.booleans()):  # trained with gaps: nodes learn where missing values go
        X[rng.random(X.shape) < 0.1] = np.nan
    options = {"max_depth": draw(st.none() | st.integers(1, 8)), "random_state": 0}
    if kind in ENSEMBLES:
        options["n_estimators"] = draw(st.integers(1, 12))
        options["bootstrap"] = draw(st.booleans())
    if kind in (ExtraTreesClassifier, ExtraTreesRegressor) and np.isnan(X).any():
        X = np.nan_to_num(X)  # extra trees take no NaN when fitting
    if hasattr(kind, "predict_proba"):
        y = rng.integers(0, draw(st.integers(2, 4)), size=rows)
        if draw(st.booleans()):  # class labels as text, as a user's often are
            y = np.array(["cat", "dog", "eel", "fox"])[y]
    else:
        y = rng.normal(size=rows) * 100
    model = kind(**options).fit(X, y)
    if draw(st.booleans()):
        model = make_pipeline(StandardScaler(), model).fit(X, y)
    return model, rng, X


def final_step(model):
    return model.steps[-1][1] if hasattr(model, "steps") else model


def edge_inputs(model, X: np.ndarray, rng: np.random.Generator, rows: int) -> np.ndarray:
    """Rows mixing training values, every threshold (exactly, and the float32
    neighbours either side), NaN, zeros and values beyond float32's range."""
    final = final_step(model)
    trees = [e.tree_ for e in final.estimators_] if hasattr(final, "estimators_") else [final.tree_]
    thresholds = np.concatenate([t.threshold[t.children_left != -1] for t in trees] + [[0.0]])
    as32 = thresholds.astype(np.float32)
    near = np.concatenate(
        [thresholds, as32, np.nextafter(as32, np.float32(np.inf)), np.nextafter(as32, -np.inf)]
    ).astype(np.float64)
    if hasattr(model, "steps"):  # thresholds are in scaled units: undo the scaling
        scaler = model.steps[0][1]
        near = near * scaler.scale_.mean() + scaler.mean_.mean()
    pool = np.concatenate([near, X[~np.isnan(X)].ravel(), [0.0, -0.0, 1e30, -1e30]])
    out = rng.choice(pool, size=(rows, X.shape[1]))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fitted_models(), st.integers(1, 40), st.floats(0, 0.3), st.floats(0, 0.02))
def test_compiled_trees_answer_as_scikit_learn(fitted, rows, nan_share, huge_share):
    model, rng, X = fitted
    inputs = edge_inputs(model, X, rng, rows)
    inputs[rng.random(inputs.shape) < nan_share] = np.nan
    inputs[rng.random(inputs.shape) < huge_share] = 1e300  # inf as float32: refused
    compiled = compile_model(model)

    if not same_answers(model.predict, compiled.predict, inputs):
        return  # both refused the input, with the same error
    if hasattr(final_step(model), "classes_"):
        np.testing.assert_allclose(
            compiled.predict_proba(inputs), model.predict_proba(inputs), rtol=1e-12, atol=0
        )


def test_finite_rows_are_answered_by_the_compiled_trees_not_scikit_learn(monkeypatch):
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(200, 5)), rng.integers(0, 3, size=200)
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    compiled = compile_model(forest)
    expected = forest.predict(X)

    def refuse(*args, **kwargs):
        raise AssertionError("scikit-learn was asked")

    monkeypatch.setattr(forest, "predict", refuse)
    monkeypatch.setattr(forest, "predict_proba", refuse)
    assert np.array_equal(compiled.predict(X), expected)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (GradientBoostingClassifier(n_estimators=3), "GradientBoostingClassifier is not"),
        (RandomForestRegressor(n_estimators=3), "2 outputs"),
        (StandardScaler(), "StandardScaler is not"),
    ],
)
def test_models_it_does_not_reproduce_say_why(model, reason):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = rng.normal(size=(30, 2)) if reason == "2 outputs" else (X[:, 0] > 0).astype(int)
    model.fit(X, y)
    with pytest.raises(NotCompiled, match=reason):
        compile_model(model)


def test_the_server_loads_a_forest_as_compiled_trees_and_says_so(tmp_path, caplog):
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(size=(300, 4)), columns=["a", "b", "c", "d"])
    y = np.where(x["a"] + x["b"] > 0, "yes", "no")
    forest = RandomForestClassifier(n_estimators=25, random_state=0).fit(x, y)
    with caplog.at_level(logging.INFO, logger="flywheel.serve"):
        served = load(save(forest, x, tmp_path / "forest"))
    assert "compiled trees serve predict: RandomForestClassifier, 25 trees" in caplog.text
    batch = from_columns(served.schema, x.to_dict(orient="list"))
    assert served.predict(batch)["predict"].tolist() == forest.predict(x).tolist()


def test_the_server_says_when_scikit_learn_serves(tmp_path, caplog):
    rng = np.random.default_rng(4)
    x = pd.DataFrame(rng.normal(size=(100, 3)), columns=["a", "b", "c"])
    y = (x["a"] > 0).astype(int)
    boosted = GradientBoostingClassifier(n_estimators=5).fit(x, y)
    with caplog.at_level(logging.INFO, logger="flywheel.serve"):
        served = load(save(boosted, x, tmp_path / "boosted"))
    assert "scikit-learn's predict serves (GradientBoostingClassifier is not" in caplog.text
    batch = from_columns(served.schema, x.to_dict(orient="list"))
    assert served.predict(batch)["predict"].tolist() == boosted.predict(x).tolist()
