"""One step of a canary's analysis: measure the last interval, judge it, say so.

The decision itself is policy/canary.py; this module feeds it figures (from
Prometheus, or by scraping the canary pods' own /metrics) and turns the
decision into status fields and Events.

Scraping needs the counters at the start of the interval. They are kept in
memory: an operator restart loses them, and the next interval simply starts
again (the analysis loses one interval, never its progress, which is in status).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..api.inferenceservice import Analysis
from ..api.stamps import format_stamp
from ..integrations import canary_metrics
from ..policy.canary import (
    Decision,
    Figures,
    Progress,
    append_verdict,
    check_due,
    judge,
    verdict_entry,
)

_baselines: dict[tuple[str, str], tuple[str, canary_metrics.Snapshot]] = {}
_guard = threading.Lock()


@dataclass(frozen=True)
class Step:
    """The analysis after this reconcile: status.analysis, the canary weight, Events."""

    analysis: dict[str, Any]
    weight: int
    decision: Decision | None  # None: nothing judged this time
    event: tuple[str, str, str] | None = None


def forget(uid: str) -> None:
    with _guard:
        for key in [k for k in _baselines if k[0] == uid]:
            _baselines.pop(key, None)


def analyse(
    uid: str,
    namespace: str,
    canary: str,
    spec: Analysis,
    status: Mapping[str, Any],
    canary_ready: bool,
    pod_urls: Mapping[str, str],
    now: datetime,
    stuck: str | None = None,
) -> Step:
    """Advance the analysis of ModelVersion `canary` by what the last interval
    showed. `stuck`: why the canary's pods cannot start, when a person must act."""
    old = dict(status.get("analysis") or {})
    if old.get("modelVersion") != canary:
        old = {"history": old.get("history")}  # a new canary starts from step 0
    # The weight the analysis asked for: status.traffic has what the router gives.
    progress = Progress.from_status(old, {"canary": old.get("weight") or 0})
    stamp = format_stamp(now)
    if progress.step <= 0:
        decision = judge(spec, progress, None)
        analysis = _analysis(old, canary, decision, window_start=None)
        event = ("Normal", "CanaryStarted", f"{canary}: {decision.reason}")
        return Step(analysis, decision.weight, decision, event)
    if not canary_ready:
        # Figures from pods that are starting would judge the start-up, not the model.
        forget(uid)
        waiting = "waiting for the canary's pods" + (f": {stuck}" if stuck else "")
        analysis = {**old, "windowStart": None, "message": waiting}
        return Step(analysis, progress.weight, None)
    window = old.get("windowStart")
    if window is None or (not spec.prometheus_url and (uid, canary) not in _baselines):
        _open_window(uid, canary, spec, pod_urls, stamp)
        analysis = {**old, "windowStart": stamp, "message": _measuring(progress, spec)}
        return Step(analysis, progress.weight, None)
    if not check_due(window, spec.interval, now):
        return Step(old, progress.weight, None)
    figures, trouble = _measure(uid, namespace, canary, spec, pod_urls, stamp)
    decision = judge(spec, progress, figures)
    reason = decision.reason if not trouble else f"{decision.reason} ({trouble})"
    decision = Decision(decision.verdict, decision.progress, reason, decision.check)
    analysis = _analysis(old, canary, decision, window_start=stamp)
    if decision.check is not None:
        analysis["lastCheck"] = {"time": stamp, **decision.check}
    event = None
    if decision.final:
        entry = verdict_entry(decision, canary, stamp)
        analysis["history"] = append_verdict(old.get("history"), entry)
        forget(uid)
        kind, why = (
            ("Normal", "Promoted") if decision.verdict == "promote" else ("Warning", "RolledBack")
        )
        event = (kind, why, f"{canary}: {decision.reason}")
    elif decision.verdict == "advance":
        event = ("Normal", "CanaryAdvanced", f"{canary}: {decision.reason}")
    elif decision.counted and not decision.check.get("passed"):
        event = ("Warning", "CanaryCheckFailed", f"{canary}: {decision.reason}")
    return Step(analysis, decision.weight, decision, event)


def _analysis(old, canary: str, decision: Decision, window_start: str | None) -> dict[str, Any]:
    done = decision.final
    progress = decision.progress
    return {
        **old,
        "modelVersion": None if done else canary,
        "step": None if done else progress.step,
        "checksPassed": None if done else progress.checks_passed,
        "checksFailed": None if done else progress.checks_failed,
        "weight": None if done else progress.weight,
        "windowStart": None if done else window_start,
        "message": decision.reason,
    }


def _open_window(uid, canary, spec: Analysis, pod_urls, stamp: str) -> None:
    if spec.prometheus_url:
        return  # Prometheus keeps the history itself
    snapshot = canary_metrics.scrape(dict(pod_urls), model_version=canary)
    with _guard:
        _baselines[(uid, canary)] = (stamp, snapshot)


def _measure(
    uid, namespace, canary, spec: Analysis, pod_urls, stamp: str
) -> tuple[Figures | None, str | None]:
    queries = {q.name: q.query for q in spec.queries or []}
    if spec.prometheus_url:
        try:
            figures = canary_metrics.prometheus_figures(
                spec.prometheus_url, namespace, canary, spec.interval, queries or None
            )
        except canary_metrics.PrometheusError as err:
            return None, str(err)
        return figures, None
    after = canary_metrics.scrape(dict(pod_urls), model_version=canary)
    with _guard:
        _, before = _baselines.get((uid, canary), (None, None))
        _baselines[(uid, canary)] = (stamp, after)
    figures = canary_metrics.figures_between(before, after)
    trouble = "; ".join(f"{pod}: {why}" for pod, why in sorted(after.failures.items())) or None
    if figures is not None and queries:
        # Extra PromQL checks cannot be answered by a scrape: fail them, say why.
        missing = dict.fromkeys(queries, "needs analysis.prometheusUrl")
        figures = Figures(figures.requests, figures.errors, figures.p99_latency_ms, {}, missing)
    return figures, trouble


def _measuring(progress: Progress, spec: Analysis) -> str:
    return f"measuring {progress.weight}% canary traffic for {spec.interval}"
