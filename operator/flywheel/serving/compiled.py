"""Fitted scikit-learn models that `flywheel serve` answers without scikit-learn.

scikit-learn spends most of a one-row request outside the arithmetic: a
forest's predict makes a Python call per tree (~17 ms for 100 trees), and a
StandardScaler + LogisticRegression pipeline checks and copies its input at
each step (~200 us, against ~5 us of arithmetic). The modules behind this
one hold a fitted model as plain arrays and answer as scikit-learn does, to
the bit; what they do not reproduce goes to scikit-learn's own predict.

- tree_ensemble.py: trees and forests;
- linear_model.py: linear classifiers and regressors, after standard scaling.
"""

from __future__ import annotations

from typing import Any


class NotCompiled(Exception):
    """The model is not one these modules reproduce exactly (the message says why)."""


def from_scikit_learn(estimator: Any) -> bool:
    """Whether the estimator's class is scikit-learn's own (a subclass defined
    elsewhere may override what these modules reproduce)."""
    return type(estimator).__module__.split(".")[0] == "sklearn"


def split_pipeline(estimator: Any) -> tuple[Any | None, Any]:
    """(the steps before the final one, or None; the final estimator)."""
    from sklearn.pipeline import Pipeline

    if type(estimator) is not Pipeline:
        return None, estimator
    final = estimator.steps[-1][1]
    if len(estimator.steps) == 1:
        return None, final
    return estimator[:-1], final


def compile_model(estimator: Any) -> Any:
    """The compiled model (its `predict` answers as the estimator's, its
    `serves` says what serves), or NotCompiled saying why scikit-learn keeps serving."""
    from .linear_model import CompiledLinear, is_linear
    from .tree_ensemble import FORESTS, TREES, CompiledModel

    _, final = split_pipeline(estimator)
    kind = type(final).__name__
    try:
        if kind in FORESTS | TREES:
            return CompiledModel(estimator)
        if is_linear(final):
            return CompiledLinear(estimator)
    except NotCompiled:
        raise
    except Exception as exc:  # an unexpected fitted state: scikit-learn serves
        raise NotCompiled(f"cannot compile {type(estimator).__name__}: {exc}") from exc
    raise NotCompiled(f"{kind} is not a scikit-learn tree, forest or linear model")
