"""Fitted scikit-learn trees, compiled once at load into flat arrays.

scikit-learn predicts a forest tree by tree, each through its own Python
call (and joblib), which for one row costs ~17 ms for 100 trees, nearly
all of a request. Here every node of every tree sits in one set of arrays
and all trees walk down together, one numpy step per level, for all rows.

The answers are scikit-learn's, not an approximation: inputs are cast to
float32 as scikit-learn casts them, a row goes left when its value is
<= the node's threshold (the float32 value compared with the float64
threshold, as in `Tree.apply`), and the trees' leaf values are added up
in tree order before dividing by the number of trees, the order
`_accumulate_prediction` adds them in (with the forest's default n_jobs),
so the sums are the same floats and argmax picks the same class.

What this does not reproduce goes to scikit-learn's own predict, batch by
batch: NaN (routed by each node's missing-value rule), infinities and
values beyond float32 (scikit-learn refuses them with its own error),
anything but a 2-D numeric ndarray (a DataFrame, sparse) and a wrong
number of columns. Models it cannot compile at all (several outputs,
other estimator types, subclasses that may override predict) are not
compiled: `compiled.compile_model` says why and the caller keeps scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .compiled import NotCompiled, from_scikit_learn, split_pipeline

FORESTS = frozenset(
    {
        "RandomForestClassifier",
        "RandomForestRegressor",
        "ExtraTreesClassifier",
        "ExtraTreesRegressor",
    }
)
TREES = frozenset(
    {"DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor"}
)


@dataclass(frozen=True)
class CompiledTrees:
    """All nodes of all trees; node ids are global (tree offset + local id)."""

    roots: np.ndarray  # (trees,) the root of each tree
    feature: np.ndarray  # (nodes,) intp; 0 at leaves (any column will do)
    threshold: np.ndarray  # (nodes,) float64; +inf at leaves
    left: np.ndarray  # (nodes,) intp; a leaf points to itself
    right: np.ndarray  # (nodes,) intp; a leaf points to itself
    leaf_value: np.ndarray  # (nodes, classes) or (nodes,): what a leaf adds
    depth: int  # the deepest tree's depth: steps until every row is at a leaf
    n_features: int

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """(trees, rows) the leaf each row reaches in each tree; X float32 (rows, features)."""
        rows = X.shape[0]
        flat = X.ravel()
        row_start = np.arange(rows, dtype=np.intp) * self.n_features
        node = np.repeat(self.roots[:, None], rows, axis=1)  # (trees, rows)
        for _ in range(self.depth):
            values = flat[row_start + self.feature[node]]
            # float32 <= float64 compares in float64, exactly as Tree.apply does
            node = np.where(values <= self.threshold[node], self.left[node], self.right[node])
        return node

    def summed(self, X: np.ndarray) -> np.ndarray:
        """The leaf values added tree by tree in tree order (accumulate is sequential)."""
        per_tree = self.leaf_value[self.leaves(X)]  # (trees, rows[, classes])
        return np.add.accumulate(per_tree, axis=0)[-1]


def compile_trees(trees: list[Any], leaf_value: Callable[[Any], np.ndarray]) -> CompiledTrees:
    """Flatten fitted `tree_` objects; leaf_value maps a tree_ to its per-node values."""
    offsets = np.cumsum([0] + [t.node_count for t in trees[:-1]])
    features, thresholds, lefts, rights, values = [], [], [], [], []
    for offset, tree in zip(offsets, trees, strict=True):
        ids = np.arange(tree.node_count, dtype=np.intp)
        leaf = tree.children_left == -1
        features.append(np.where(leaf, 0, tree.feature).astype(np.intp))
        thresholds.append(np.where(leaf, np.inf, tree.threshold).astype(np.float64))
        lefts.append(np.where(leaf, ids, tree.children_left).astype(np.intp) + offset)
        rights.append(np.where(leaf, ids, tree.children_right).astype(np.intp) + offset)
        values.append(leaf_value(tree))
    return CompiledTrees(
        roots=offsets.astype(np.intp),
        feature=np.concatenate(features),
        threshold=np.concatenate(thresholds),
        left=np.concatenate(lefts),
        right=np.concatenate(rights),
        leaf_value=np.concatenate(values),
        depth=max(int(t.max_depth) for t in trees),
        n_features=int(trees[0].n_features),
    )


class CompiledModel:
    """predict (and predict_proba for classifiers) answering as scikit-learn does."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.transform, final = split_pipeline(estimator)
        self.final = final
        kind = type(final).__name__
        if not from_scikit_learn(final) or kind not in FORESTS | TREES:
            raise NotCompiled(f"{kind} is not a scikit-learn tree or forest")
        if getattr(final, "n_outputs_", 1) != 1:
            raise NotCompiled(f"{kind} has {final.n_outputs_} outputs; only one is compiled")
        trees = [e.tree_ for e in final.estimators_] if kind in FORESTS else [final.tree_]
        self.classifier = hasattr(final, "classes_")
        self.forest = kind in FORESTS
        self.n_features = int(final.n_features_in_)
        if any(t.n_features != self.n_features or t.n_outputs != 1 for t in trees):
            raise NotCompiled(f"{kind}'s trees do not all read {self.n_features} features")
        if self.classifier:
            n_classes = int(final.n_classes_)
            self.classes = final.classes_
            self.trees = compile_trees(trees, lambda t: t.value[:, 0, :n_classes])
        else:
            self.trees = compile_trees(trees, lambda t: t.value[:, 0, 0])
        self.description = f"{kind}, {len(trees)} trees, depth <= {self.trees.depth}"
        self.serves = f"compiled trees serve predict: {self.description}"

    def _matrix(self, X: Any) -> np.ndarray | None:
        """X as scikit-learn's float32 matrix, or None if scikit-learn must answer."""
        if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype.kind not in "fiub":
            return None
        if X.shape[1] != self.n_features or X.shape[0] == 0:
            return None
        with np.errstate(over="ignore"):  # beyond float32: inf, and scikit-learn's error
            matrix = np.ascontiguousarray(X, dtype=np.float32)
        if not np.isfinite(matrix).all():  # NaN routing and refusals stay scikit-learn's
            return None
        return matrix

    def _transformed(self, X: Any) -> Any:
        return X if self.transform is None else self.transform.transform(X)

    def _leaf_mean(self, Xt: Any) -> np.ndarray | None:
        """The trees' leaf values averaged as the forest averages them (a single
        tree's as they are), or None if scikit-learn must answer."""
        matrix = self._matrix(Xt)
        if matrix is None:
            return None
        summed = self.trees.summed(matrix)
        if self.forest:
            summed /= len(self.final.estimators_)
        return summed

    def predict_proba(self, X: Any) -> np.ndarray:
        Xt = self._transformed(X)
        proba = self._leaf_mean(Xt)
        return self.final.predict_proba(Xt) if proba is None else proba

    def predict(self, X: Any) -> np.ndarray:
        Xt = self._transformed(X)
        mean = self._leaf_mean(Xt)
        if mean is None:
            return self.final.predict(Xt)
        if self.classifier:
            return self.classes.take(np.argmax(mean, axis=1), axis=0)
        return mean
