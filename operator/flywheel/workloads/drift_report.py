"""Evidently's data-drift tests over the two samples, and the verdict.

One `DataDriftPreset` run: a `ValueDrift` per column (the statistical test
given, or the one Evidently chooses for the column's type and size) and
`DriftedColumnsCount`, whose share of drifted columns is compared with the
threshold: share >= threshold is drift, as Evidently's dataset drift test has
it. The per-column drifted flags are the preset's own column tests.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

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
    report: dict[str, Any]  # the snapshot as JSON


def verdict(share: float, threshold: float) -> Verdict:
    return "Drift" if share >= threshold else "NoDrift"


def stat_tests() -> dict[str, set[str]]:
    """Evidently's registered tests and the column kinds each applies to."""
    import evidently.legacy.calculations.stattests  # noqa: F401  (registers them)
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
    """Run the preset over the features (the frames' columns, typed by `kinds`)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    features = list(kinds)
    definition = DataDefinition(
        numerical_columns=[n for n in features if kinds[n] == "num"],
        categorical_columns=[n for n in features if kinds[n] == "cat"],
    )
    preset = DataDriftPreset(
        columns=features, drift_share=drift_share, method=method, threshold=stat_threshold
    )
    report = Report([preset], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(current[features], data_definition=definition),
        Dataset.from_pandas(reference[features], data_definition=definition),
    )
    document = json.loads(snapshot.json())
    results, share, drifted = read_results(document, features)
    html = snapshot.get_html_str(as_iframe=False).encode()
    return DriftOutcome(results, share, drifted, html, document)


def read_results(
    document: dict[str, Any], features: list[str]
) -> tuple[list[FeatureResult], float, int]:
    """Per-column results, the share and count of drifted columns, from the snapshot's JSON."""
    scores: dict[str, tuple[float | None, str | None, float | None]] = {}
    share, count = 0.0, 0
    for metric in document.get("metrics", []):
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith(":ValueDrift"):
            scores[config["column"]] = (
                finite(metric.get("value")),
                config.get("method"),
                finite(config.get("threshold")),
            )
        elif kind.endswith(":DriftedColumnsCount"):
            value = metric.get("value") or {}
            share = finite(value.get("share")) or 0.0
            count = int(finite(value.get("count")) or 0)
    flagged: dict[str, bool] = {}
    for test in document.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if str(params.get("type", "")).endswith(":ValueDrift"):
            flagged[params["column"]] = test.get("status") == "FAIL"
    results = []
    for name in features:
        score, used, threshold = scores.get(name, (None, None, None))
        results.append(FeatureResult(name, score, flagged.get(name, False), used, threshold))
    return results, share, count


def finite(value: Any) -> float | None:
    """A number JSON can carry: NaN and infinities (a constant column's p-value) are None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
