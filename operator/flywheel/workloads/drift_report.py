"""Evidently's data-drift tests over the two samples, and the verdict.

The tests of Evidently's `DataDriftPreset`, column by column: the
statistical test given, or the one Evidently chooses for the column's type
and size, its threshold and flag; the share of drifted columns is compared
with the threshold: share >= threshold is drift, as Evidently's dataset
drift test has it. The report is rendered from those results (drift_html.py).
"""

from __future__ import annotations

import functools
import gc
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .drift_data import Kind
from .drift_errors import DriftError

Verdict = str  # "Drift" | "NoDrift" | "InsufficientData"
KIND_NAMES = {"num": "numerical", "cat": "categorical"}


@dataclass(frozen=True)
class FeatureResult:
    name: str
    score: float | None  # the test's statistic or p-value, per `method`
    drifted: bool
    method: str | None  # as Evidently names it, e.g. "K-S p_value", "psi"
    threshold: float | None = None  # of that test

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": self.score,
            "drifted": self.drifted,
            "method": self.method,
        }


@dataclass
class DriftOutcome:
    features: list[FeatureResult]
    share: float
    drifted: int
    html: bytes
    report: dict[str, Any]  # every column's test and histograms, as JSON


def verdict(share: float, threshold: float) -> Verdict:
    return "Drift" if share >= threshold else "NoDrift"


@functools.cache  # once: a second freeze would also freeze the check's own data
def import_evidently() -> None:
    """Import the Evidently modules the check uses, without the cycle collector.

    `evidently/__init__.py` imports the whole package (its UI, LLM and
    legacy metrics, plotly, nltk, sklearn): about 450,000 long-lived objects
    and most of a check's time (`python -X importtime`: about 7 s), so it
    does not run (lazy_package.py). What the two modules still bring is
    imported with the collector off and frozen afterwards: the collector's
    passes over Evidently's objects had cost about 0.6 s of CPU during the
    import and about 1 s more at interpreter exit (the tests' own garbage is
    still collected)."""
    from ..lazy_package import imports_without_init

    enabled = gc.isenabled()
    gc.disable()
    try:
        # Without Evidently's __init__ unless something asks for it later
        # (lazy_package.py): 80 MiB and ~2.5 s of a check.
        imports_without_init(
            "evidently",
            [
                "evidently.legacy.calculations.data_drift",
                "evidently.legacy.calculations.stattests",  # registers the tests
            ],
        )
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def stat_tests() -> dict[str, set[str]]:
    """Evidently's registered tests and the column kinds each applies to."""
    import_evidently()
    from evidently.legacy.calculations.stattests import registry

    return {
        name: {str(kind.value) for kind in by_kind}
        for name, by_kind in registry._registered_stat_tests.items()
    }


def check_stat_test(method: str | None, kinds: dict[str, Kind]) -> None:
    """An unknown test, or one for another kind of column, fails before any data is read."""
    if not method:
        return
    known = stat_tests()
    if method not in known:
        raise DriftError(
            "UnknownStatTest",
            f"no Evidently statistical test {method!r}; known: {', '.join(sorted(known))}",
        )
    misfits = [name for name, kind in kinds.items() if kind not in known[method]]
    if misfits:
        kinds_text = " and ".join(KIND_NAMES.get(k, k) for k in sorted(known[method]))
        raise DriftError(
            "UnknownStatTest",
            f"statistical test {method!r} applies to {kinds_text} columns only; "
            f"not to {', '.join(f'{n} ({KIND_NAMES[kinds[n]]})' for n in misfits)}",
        )


def run_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: dict[str, Kind],
    *,
    method: str | None = None,
    stat_threshold: float | None = None,
    drift_share: float = 0.5,
) -> DriftOutcome:
    """Evidently's test of each feature (the frames' columns, typed by `kinds`).

    `get_one_column_drift` is the function the preset's `ValueDrift` and its
    `DriftedColumnsCount` both call per column, with the same options; calling
    it once per column skips the preset's second pass over every column, its
    pydantic snapshot and its plotly HTML, which took most of the check's time
    (py-spy: 56% in `Report.run`, 19% rendering). The share is counted as
    `DriftedColumnsCount` counts it: drifted columns over checked columns."""
    import_evidently()
    from evidently.legacy.calculations.data_drift import get_one_column_drift
    from evidently.legacy.core import ColumnType
    from evidently.legacy.metric_results import DatasetColumns, DatasetUtilityColumns
    from evidently.legacy.options.data_drift import DataDriftOptions

    from .drift_data import release_freed_memory
    from .drift_html import render_report

    options = DataDriftOptions(all_features_stattest=method, all_features_threshold=stat_threshold)
    column_types = {"num": ColumnType.Numerical, "cat": ColumnType.Categorical}
    results, columns = [], []
    for name, kind in kinds.items():
        # One column a call: the plot data Evidently also computes copies the frame it is given.
        current_column, reference_column = current[[name]], reference[[name]]
        drift = get_one_column_drift(
            current_data=current_column,
            reference_data=reference_column,
            column_name=name,
            options=options,
            # Without it Evidently cleans every column (a replace, a dropna and a
            # copy of the frame: py-spy, ~12% of the tests' time); the cleaning
            # of a column with nothing to clean changes nothing.
            is_contains_nans=(needs_cleaning(current_column), needs_cleaning(reference_column)),
            dataset_columns=DatasetColumns(
                utility_columns=DatasetUtilityColumns(
                    date=None, id=None, target=None, prediction=None
                ),
                target_type=None,
                task=None,
                num_feature_names=[name] if kind == "num" else [],
                cat_feature_names=[name] if kind == "cat" else [],
                text_feature_names=[],
                datetime_feature_names=[],
                target_names=None,
            ),
            column_type=column_types[kind],
            agg_data=True,
        )
        score, threshold = finite(drift.drift_score), finite(drift.stattest_threshold)
        # Named as the preset names it: the test given, else the one Evidently chose.
        used = method or drift.stattest_name
        results.append(FeatureResult(name, score, bool(drift.drift_detected), used, threshold))
        columns.append(
            {
                "column": name,
                "kind": KIND_NAMES[kind],
                "method": used,
                "threshold": threshold,
                "score": score,
                "drifted": bool(drift.drift_detected),
                "reference": distribution(drift.reference.distribution),
                "current": distribution(drift.current.distribution),
            }
        )
        release_freed_memory()  # each column's temporaries, before the next one's
    drifted = sum(r.drifted for r in results)
    share = drifted / len(results) if results else 0.0
    document = {
        "evidently": evidently_version(),
        "driftShare": drift_share,
        "share": share,
        "driftedCount": drifted,
        "columns": columns,
    }
    return DriftOutcome(results, share, drifted, render_report(document), document)


def needs_cleaning(frame: pd.DataFrame) -> pd.Series:
    """Per column: does it hold a missing or an infinite value, what
    `get_one_column_drift` drops before testing when told the column has any."""
    flags = {}
    for name in frame.columns:
        column = frame[name]
        missing = bool(column.isna().any())
        if not missing and pd.api.types.is_numeric_dtype(column):
            missing = not bool(np.isfinite(column.to_numpy()).all())
        flags[name] = missing
    return pd.Series(flags, dtype=bool)


def distribution(found: Any) -> dict[str, list[Any]] | None:
    """Evidently's histogram of a column: bin edges (numbers) or values
    (categories) and their counts, as JSON."""
    if found is None:
        return None

    def plain(values: Any) -> list[Any]:
        return [v.item() if hasattr(v, "item") else v for v in list(values)]

    return {"x": plain(found.x), "y": plain(found.y)}


def evidently_version() -> str:
    from importlib.metadata import version

    return version("evidently")


def finite(value: Any) -> float | None:
    """A number JSON can carry: NaN and infinities (a constant column's p-value) are None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
