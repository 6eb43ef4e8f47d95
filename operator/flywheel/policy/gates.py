"""Model gates: `metric op threshold`, and "must beat production"."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..api.trainingrun import Gate

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
# Metrics where smaller is better; for every other metric larger is better.
LOWER_IS_BETTER = {"rmse", "mae", "log_loss", "mse"}


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    results: list[dict]  # wire-format GateResult entries
    reason: str
    message: str


def evaluate_gates(
    gates: Sequence[Gate],
    metrics: Mapping[str, float],
    must_beat: str | None = None,
    production: Mapping[str, float] | None = None,
) -> GateVerdict:
    results, failures = [], []
    for gate in gates:
        value = metrics.get(gate.metric)
        passed = value is not None and _OPS[gate.op](value, gate.threshold)
        results.append(
            {
                "metric": gate.metric,
                "op": gate.op,
                "threshold": gate.threshold,
                "value": value,
                "passed": passed,
            }
        )
        if value is None:
            failures.append(f"{gate.metric} was not logged by the run (logged: {_names(metrics)})")
        elif not passed:
            failures.append(f"{gate.metric} = {value:.4g}, needs {gate.op} {gate.threshold:g}")
    if must_beat:
        failures += _beat(must_beat, metrics, production, results)
    if failures:
        return GateVerdict(False, results, "GateFailed", "; ".join(failures))
    return GateVerdict(True, results, "GatesPassed", f"{len(results)} gate(s) passed")


def _beat(metric: str, metrics: Mapping[str, float], production, results: list[dict]) -> list[str]:
    value = metrics.get(metric)
    if value is None:
        results.append(
            {"metric": metric, "op": "beats production", "threshold": 0, "passed": False}
        )
        return [f"{metric} was not logged by the run (logged: {_names(metrics)})"]
    current = (production or {}).get(metric)
    if current is None:
        # Nothing in production yet (or it never logged the metric): nothing to beat.
        results.append(
            {
                "metric": metric,
                "op": "beats production",
                "threshold": 0,
                "value": value,
                "passed": True,
            }
        )
        return []
    op = "<" if metric in LOWER_IS_BETTER else ">"
    passed = _OPS[op](value, current)
    results.append(
        {"metric": metric, "op": op, "threshold": current, "value": value, "passed": passed}
    )
    return [] if passed else [f"{metric} = {value:.4g} does not beat production's {current:.4g}"]


def _names(metrics: Mapping[str, float]) -> str:
    return ", ".join(sorted(metrics)) or "none"
