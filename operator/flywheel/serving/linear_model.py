"""Fitted scikit-learn linear models, answered with numpy alone.

A StandardScaler + LogisticRegression pipeline's predict costs ~200 us a
call in scikit-learn whatever the batch (input checks, a copy, the same
again for the second step), against ~5 us of arithmetic for one row; at
batch 1 that was more than half of a served request. Here the call takes
~8 us for one row and ~10 us for 64, checks included, and the same
arithmetic runs on the same arrays in the same order:

- each StandardScaler step subtracts `mean_` and divides by `scale_`, as
  `StandardScaler.transform` does (elementwise, so exactly the same floats);
- the final step computes `X @ coef_.T + intercept_`, the expression of
  `LinearClassifierMixin.decision_function` and `LinearModel._decision_function`,
  on a C-contiguous float64 matrix as scikit-learn's would be, so BLAS is
  called the same way and rounds the same way;
- a classifier takes `score > 0` (one column) or the argmax (several) and
  looks the class up in `classes_`, as `LinearClassifierMixin.predict` does.

Only estimators whose predict *is* those scikit-learn functions are compiled
(LogisticRegression, SGDClassifier, LinearSVC, Perceptron, LinearRegression
and others sharing them); a subclass or estimator with its own predict
(Ridge, Lasso, RidgeClassifier) is not. Inputs this does not reproduce go to
the pipeline's own predict, batch by batch: anything but a C-contiguous
float64 matrix with the fitted number of columns, and any value that is not
finite before or after scaling (scikit-learn refuses those with its error).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .compiled import NotCompiled, from_scikit_learn, split_pipeline


def is_linear(final: Any) -> bool:
    """Whether the estimator predicts with scikit-learn's own linear functions."""
    from sklearn.linear_model._base import (
        LinearClassifierMixin,
        LinearModel,
        MultiOutputLinearModel,
    )

    kind = type(final)
    if not from_scikit_learn(final):
        return False
    if isinstance(final, LinearClassifierMixin):
        return (
            kind.predict is LinearClassifierMixin.predict
            and kind.decision_function is LinearClassifierMixin.decision_function
        )
    return (
        isinstance(final, LinearModel)
        and kind.predict in (LinearModel.predict, MultiOutputLinearModel.predict)
        and getattr(kind, "_decision_function", None) is LinearModel._decision_function
    )


class CompiledLinear:
    """predict answering as the pipeline (scalers, then a linear model) does."""

    def __init__(self, estimator: Any) -> None:
        from sklearn.preprocessing import StandardScaler

        self.estimator = estimator
        prefix, final = split_pipeline(estimator)
        steps = [] if prefix is None else [step for _, step in prefix.steps]
        for step in steps:
            if type(step) is not StandardScaler:
                raise NotCompiled(f"{type(step).__name__} before {type(final).__name__}")
        self.scalers = [
            (
                np.asarray(s.mean_, dtype=np.float64) if s.with_mean else None,
                np.asarray(s.scale_, dtype=np.float64) if s.with_std else None,
            )
            for s in steps
        ]
        # The fitted array itself (a sparsified coef_ becomes an object array
        # here and is refused), so `coef.T` is the very view scikit-learn uses.
        self.coef = np.asarray(final.coef_)
        self.intercept = final.intercept_
        if self.coef.dtype != np.float64:
            raise NotCompiled(f"{type(final).__name__}'s coef_ is {self.coef.dtype}, not float64")
        self.n_features = int(final.n_features_in_)
        self.classes = getattr(final, "classes_", None)
        names = [type(s).__name__ for s in steps] + [type(final).__name__]
        self.description = f"{' -> '.join(names)}, {self.n_features} features"
        self.serves = f"compiled linear model serves predict: {self.description}"

    def _scores(self, X: Any) -> np.ndarray | None:
        """The decision function's values, or None if scikit-learn must answer."""
        if not isinstance(X, np.ndarray) or X.dtype != np.float64 or X.ndim != 2:
            return None
        if not X.flags.c_contiguous or X.shape[1] != self.n_features or X.shape[0] == 0:
            return None
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for mean, scale in self.scalers:
                if mean is not None:
                    X = X - mean
                if scale is not None:
                    X = X / scale
        # One check, after scaling: NaN and infinities in the input are still
        # not finite once scaled, and a finite value may overflow when scaled.
        # Either is scikit-learn's error to give.
        if not np.isfinite(X).all():
            return None
        # The same expression, on the same arrays, as scikit-learn's.
        if self.coef.ndim == 1:
            return X @ self.coef + self.intercept
        return X @ self.coef.T + self.intercept

    def predict(self, X: Any) -> np.ndarray:
        scores = self._scores(X)
        if scores is None:
            return self.estimator.predict(X)
        if self.classes is None:
            return scores
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return self.classes.take(indices, axis=0)
