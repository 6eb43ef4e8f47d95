"""Canary analysis: one check's figures in, a verdict with its reason out.

Semantics follow Flagger. Step 1 sends `stepPercent` of the traffic to the
canary. A check passes when the error rate is at most `maxErrorRate`, the p99
latency at most `maxP99LatencyMs` (if set) and every extra query at most its
`max`. `checksPerStep` passing checks move to the next step (weight +
`stepPercent`, capped at `maxPercent`); passing checks at `maxPercent` promote
the canary. Every failed check counts towards `failureLimit`, and reaching it
rolls the canary back, with no person involved. An interval without enough
traffic counts neither way: the analysis holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from ..api.common import parse_duration
from ..api.inferenceservice import Analysis
from ..api.stamps import as_time

VerdictKind = Literal["start", "hold", "advance", "promote", "rollback"]

# Fewer requests than this in one interval say nothing about an error rate.
MIN_REQUESTS = 10
# status.analysis.history keeps this many verdicts (the CRD's maxItems).
HISTORY_LIMIT = 20


@dataclass(frozen=True)
class Figures:
    """One check's measurement of the canary over the last interval."""

    requests: float
    errors: float  # answers with a 5xx status
    p99_latency_ms: float | None = None
    queries: Mapping[str, float] = field(default_factory=dict)
    # Extra queries that could not be evaluated: name -> why.
    query_errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None


@dataclass(frozen=True)
class Progress:
    """What status.analysis and status.traffic carry from one check to the next."""

    step: int = 0  # 1-based; 0 = not started
    checks_passed: int = 0  # at this step
    checks_failed: int = 0  # in total
    weight: int = 0  # canary traffic percent

    @classmethod
    def from_status(
        cls, analysis: Mapping[str, Any] | None, traffic: Mapping[str, Any] | None
    ) -> Progress:
        """Read status.analysis and status.traffic (wire form, camelCase)."""
        analysis, traffic = analysis or {}, traffic or {}
        return cls(
            step=int(analysis.get("step") or 0),
            checks_passed=int(analysis.get("checksPassed") or 0),
            checks_failed=int(analysis.get("checksFailed") or 0),
            weight=int(traffic.get("canary") or 0),
        )

    def to_status(self) -> dict[str, int]:
        """The status.analysis counters (status.traffic comes from the traffic policy)."""
        return {
            "step": self.step,
            "checksPassed": self.checks_passed,
            "checksFailed": self.checks_failed,
        }


@dataclass(frozen=True)
class Decision:
    """What to do after a check.

    start: the canary gets its first step (progress.weight = stepPercent).
    hold: keep the current weight (a counted check that did not yet decide
        anything, or an interval that could not be judged; see `counted`).
    advance: move to the next step (progress.weight is the new weight).
    promote: the canary becomes stable (progress.weight = 100).
    rollback: remove the canary, stable untouched (progress.weight = 0).
    """

    verdict: VerdictKind
    progress: Progress
    reason: str
    # CheckFigures in wire form without `time` (the caller adds it); None when
    # nothing was measured. Holds that were not counted carry no `passed`.
    check: dict[str, Any] | None = None

    @property
    def weight(self) -> int:
        return self.progress.weight

    @property
    def counted(self) -> bool:
        return self.check is not None and "passed" in self.check

    @property
    def final(self) -> bool:
        return self.verdict in ("promote", "rollback")


def judge(
    analysis: Analysis,
    progress: Progress,
    figures: Figures | None,
    min_requests: int = MIN_REQUESTS,
) -> Decision:
    """Judge one check of the canary. `figures` cover the interval since the last check."""
    if progress.step <= 0:
        first = Progress(step=1, weight=min(analysis.step_percent, analysis.max_percent))
        return Decision("start", first, f"canary started at {_at(first)}")
    if progress.weight <= 0:  # status lost its weight; rebuild it from the step
        weight = min(progress.step * analysis.step_percent, analysis.max_percent)
        progress = replace(progress, weight=weight)
    where = _at(progress)
    if figures is None:
        return Decision("hold", progress, f"no traffic measured at {where}; holding")
    check = _figures_wire(figures)
    if figures.requests <= 0:
        return Decision("hold", progress, f"no traffic to the canary at {where}; holding", check)
    if figures.requests < min_requests:
        reason = (
            f"not enough requests ({_num(figures.requests)} < {min_requests}) at {where}; holding"
        )
        return Decision("hold", progress, reason, check)

    failures, passes = _evaluate(analysis, figures)
    check["passed"] = not failures
    if failures:
        failed = progress.checks_failed + 1
        after = replace(progress, checks_failed=failed)
        what = f"{'; '.join(failures)} at {where}"
        if failed >= analysis.failure_limit:
            reason = (
                f"{what}; {failed} failed check(s) reached failureLimit {analysis.failure_limit}"
            )
            return Decision("rollback", replace(after, weight=0), reason, check)
        reason = f"{what}; failed check {failed} of failureLimit {analysis.failure_limit}"
        return Decision("hold", after, reason, check)

    passed = progress.checks_passed + 1
    summary = f"check passed at {where}: {', '.join(passes)}"
    if passed < analysis.checks_per_step:
        reason = f"{summary} ({passed}/{analysis.checks_per_step} checks at this step)"
        return Decision("hold", replace(progress, checks_passed=passed), reason, check)
    if progress.weight >= analysis.max_percent:
        reason = f"{summary}; {passed} passing check(s) at maxPercent: promoting"
        done = replace(progress, checks_passed=passed, weight=100)
        return Decision("promote", done, reason, check)
    nxt = Progress(
        step=progress.step + 1,
        checks_passed=0,
        checks_failed=progress.checks_failed,
        weight=min(progress.weight + analysis.step_percent, analysis.max_percent),
    )
    return Decision("advance", nxt, f"{summary}; advancing to {_at(nxt)}", check)


def _evaluate(analysis: Analysis, figures: Figures) -> tuple[list[str], list[str]]:
    """(failures, passes), each a list of readable comparisons."""
    failures, passes = [], []
    limits = analysis.thresholds
    rate = figures.error_rate or 0.0
    if rate <= limits.max_error_rate:
        passes.append(f"error rate {_pct(rate)} <= {_pct(limits.max_error_rate)}")
    else:
        failures.append(f"error rate {_pct(rate)} > {_pct(limits.max_error_rate)} (maxErrorRate)")
    if limits.max_p99_latency_ms is not None:
        p99, bound = figures.p99_latency_ms, _num(limits.max_p99_latency_ms)
        if p99 is None or math.isnan(p99):
            failures.append(f"p99 latency could not be measured (maxP99LatencyMs {bound}ms)")
        elif p99 <= limits.max_p99_latency_ms:
            passes.append(f"p99 {_num(p99)}ms <= {bound}ms")
        else:
            failures.append(f"p99 latency {_num(p99)}ms > {bound}ms (maxP99LatencyMs)")
    for query in analysis.queries or []:
        value = figures.queries.get(query.name)
        if query.name in figures.query_errors or value is None:
            why = figures.query_errors.get(query.name) or "no value"
            failures.append(f"query {query.name} could not be evaluated: {why}")
        elif math.isnan(value):
            failures.append(f"query {query.name} returned NaN (max {_num(query.max)})")
        elif value <= query.max:
            passes.append(f"{query.name} {_num(value)} <= {_num(query.max)}")
        else:
            failures.append(f"query {query.name} = {_num(value)} > {_num(query.max)} (max)")
    return failures, passes


def _figures_wire(figures: Figures) -> dict[str, Any]:
    check: dict[str, Any] = {}
    if figures.error_rate is not None:
        check["errorRate"] = round(figures.error_rate, 6)
    if figures.p99_latency_ms is not None and not math.isnan(figures.p99_latency_ms):
        check["p99LatencyMs"] = round(figures.p99_latency_ms, 3)
    return check


def _at(progress: Progress) -> str:
    return f"step {progress.step} ({progress.weight}%)"


def _pct(share: float) -> str:
    percent = share * 100
    return f"{percent:.1f}%" if percent == 0 or percent >= 0.1 else f"{percent:.2g}%"


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def check_due(last_check: datetime | str | None, interval: str, now: datetime) -> bool:
    """Whether `interval` (a spec duration such as '1m') has passed since the last check."""
    return seconds_until_check(last_check, interval, now) <= 0


def seconds_until_check(last_check: datetime | str | None, interval: str, now: datetime) -> float:
    """Seconds until the next check is due; 0 when it is due now (or never ran)."""
    last = as_time(last_check)
    if last is None:
        return 0.0
    wait = parse_duration(interval) - (now - last)
    return max(wait, timedelta(0)).total_seconds()


def verdict_entry(decision: Decision, model_version: str, time: datetime | str) -> dict[str, Any]:
    """A status.analysis.history entry (wire-form Verdict) for a promote or rollback."""
    if not decision.final:
        raise ValueError(f"only promote and rollback are recorded, not {decision.verdict}")
    return {
        "time": time.isoformat() if isinstance(time, datetime) else time,
        "modelVersion": model_version,
        "verdict": "Promoted" if decision.verdict == "promote" else "RolledBack",
        "reason": decision.reason,
    }


def append_verdict(
    history: Sequence[Mapping[str, Any]] | None,
    entry: Mapping[str, Any],
    limit: int = HISTORY_LIMIT,
) -> list[dict[str, Any]]:
    """History with `entry` appended (newest last), keeping the newest `limit`."""
    return [dict(item) for item in [*(history or []), entry]][-limit:]
