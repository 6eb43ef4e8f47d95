"""Canary analysis, table-driven."""

from datetime import UTC, datetime, timedelta

import pytest

from flywheel.api.inferenceservice import Analysis, CheckFigures, Verdict
from flywheel.policy.canary import (
    HISTORY_LIMIT,
    Figures,
    Progress,
    append_verdict,
    check_due,
    judge,
    seconds_until_check,
    verdict_entry,
)


def analysis(**overrides) -> Analysis:
    wire = {
        "stepPercent": 10,
        "maxPercent": 30,
        "checksPerStep": 2,
        "failureLimit": 2,
        "thresholds": {"maxErrorRate": 0.01, "maxP99LatencyMs": 250},
    }
    return Analysis.model_validate({**wire, **overrides})


def ok(requests=1000, errors=0, p99=100.0, **kw) -> Figures:
    return Figures(requests=requests, errors=errors, p99_latency_ms=p99, **kw)


STEP2 = Progress(step=2, checks_passed=0, checks_failed=0, weight=20)
TOP = Progress(step=3, checks_passed=1, checks_failed=0, weight=30)
QUERIES = [{"name": "score_drop", "query": "max(score_drop)", "max": 0.5}]


@pytest.mark.parametrize(
    ("spec", "progress", "figures", "verdict", "after", "passed", "says"),
    [
        # not started: the first step, whatever was measured
        ({}, Progress(), None, "start", Progress(1, 0, 0, 10), None, "started at step 1 (10%)"),
        (
            {"stepPercent": 30},
            Progress(),
            None,
            "start",
            Progress(1, 0, 0, 30),
            None,
            "step 1 (30%)",
        ),
        # nothing to judge: hold, counted neither way
        ({}, STEP2, None, "hold", STEP2, None, "no traffic measured at step 2 (20%)"),
        ({}, STEP2, ok(requests=0), "hold", STEP2, None, "no traffic to the canary"),
        ({}, STEP2, ok(requests=4), "hold", STEP2, None, "not enough requests (4 < 10)"),
        # error rate: boundary equality passes, above fails
        ({}, STEP2, ok(errors=10), "hold", Progress(2, 1, 0, 20), True, "error rate 1.0% <= 1.0%"),
        (
            {},
            STEP2,
            ok(errors=120),
            "hold",
            Progress(2, 0, 1, 20),
            False,
            "error rate 12.0% > 1.0% (maxErrorRate) at step 2 (20%); failed check 1",
        ),
        # p99: boundary equality passes, above fails, unmeasured fails
        ({}, STEP2, ok(p99=250.0), "hold", Progress(2, 1, 0, 20), True, "p99 250ms <= 250ms"),
        (
            {},
            STEP2,
            ok(p99=251.0),
            "hold",
            Progress(2, 0, 1, 20),
            False,
            "p99 latency 251ms > 250ms (maxP99LatencyMs) at step 2 (20%)",
        ),
        (
            {},
            STEP2,
            ok(p99=None),
            "hold",
            Progress(2, 0, 1, 20),
            False,
            "p99 latency could not be measured",
        ),
        # no latency threshold: p99 is not needed
        (
            {"thresholds": {"maxErrorRate": 0.05}},
            STEP2,
            ok(p99=None),
            "hold",
            Progress(2, 1, 0, 20),
            True,
            "check passed",
        ),
        # extra queries
        (
            {"queries": QUERIES},
            STEP2,
            ok(queries={"score_drop": 0.5}),
            "hold",
            Progress(2, 1, 0, 20),
            True,
            "score_drop 0.5 <= 0.5",
        ),
        (
            {"queries": QUERIES},
            STEP2,
            ok(queries={"score_drop": 0.7}),
            "hold",
            Progress(2, 0, 1, 20),
            False,
            "query score_drop = 0.7 > 0.5 (max)",
        ),
        (
            {"queries": QUERIES},
            STEP2,
            ok(query_errors={"score_drop": "query 'max(score_drop)' returned no samples"}),
            "hold",
            Progress(2, 0, 1, 20),
            False,
            "query score_drop could not be evaluated: query 'max(score_drop)' returned no samples",
        ),
        (
            {"queries": QUERIES},
            STEP2,
            ok(),
            "hold",
            Progress(2, 0, 1, 20),
            False,
            "query score_drop could not be evaluated: no value",
        ),
        (
            {"queries": QUERIES},
            STEP2,
            ok(queries={"score_drop": float("nan")}),
            "hold",
            Progress(2, 0, 1, 20),
            False,
            "returned NaN",
        ),
        # several failures are all named
        (
            {},
            STEP2,
            ok(errors=500, p99=900.0),
            "hold",
            Progress(2, 0, 1, 20),
            False,
            "error rate 50.0% > 1.0% (maxErrorRate); p99 latency 900ms > 250ms",
        ),
        # advance after checksPerStep passing checks
        (
            {},
            Progress(2, 1, 1, 20),
            ok(),
            "advance",
            Progress(3, 0, 1, 30),
            True,
            "advancing to step 3 (30%)",
        ),
        (
            {"checksPerStep": 1},
            Progress(1, 0, 0, 10),
            ok(),
            "advance",
            Progress(2, 0, 0, 20),
            True,
            "",
        ),
        # the weight is capped at maxPercent
        (
            {"stepPercent": 20, "maxPercent": 50, "checksPerStep": 1},
            Progress(2, 0, 0, 40),
            ok(),
            "advance",
            Progress(3, 0, 0, 50),
            True,
            "advancing to step 3 (50%)",
        ),
        # passing checks at maxPercent promote
        ({}, TOP, ok(), "promote", Progress(3, 2, 0, 100), True, "at maxPercent: promoting"),
        ({}, Progress(3, 0, 0, 30), ok(), "hold", Progress(3, 1, 0, 30), True, "(1/2 checks"),
        # failureLimit failed checks roll back
        (
            {},
            Progress(2, 1, 1, 20),
            ok(errors=100),
            "rollback",
            Progress(2, 1, 2, 0),
            False,
            "2 failed check(s) reached failureLimit 2",
        ),
        (
            {"failureLimit": 1},
            TOP,
            ok(p99=300.0),
            "rollback",
            Progress(3, 1, 1, 0),
            False,
            "p99 latency 300ms > 250ms (maxP99LatencyMs) at step 3 (30%)",
        ),
        # a weight lost from status is rebuilt from the step
        ({}, Progress(2, 0, 0, 0), None, "hold", STEP2, None, "step 2 (20%)"),
    ],
)
def test_judge(spec, progress, figures, verdict, after, passed, says):
    decision = judge(analysis(**spec), progress, figures)
    assert decision.verdict == verdict
    assert decision.progress == after
    assert decision.weight == after.weight
    assert says in decision.reason
    assert decision.counted is (passed is not None)
    if passed is not None:
        assert decision.check["passed"] is passed
        CheckFigures.model_validate(decision.check)  # status wire form


def test_figures_in_wire_form():
    decision = judge(analysis(), STEP2, ok(requests=200, errors=3, p99=123.4567))
    assert decision.check == {"errorRate": 0.015, "p99LatencyMs": 123.457, "passed": False}
    held = judge(analysis(), STEP2, ok(requests=5, errors=1))
    assert held.check == {"errorRate": 0.2, "p99LatencyMs": 100.0}
    assert judge(analysis(), STEP2, None).check is None


def test_min_requests_is_a_parameter():
    assert judge(analysis(), STEP2, ok(requests=4), min_requests=1).counted
    assert judge(analysis(), STEP2, ok(requests=20), min_requests=50).verdict == "hold"


def test_a_whole_rollout_promotes():
    spec, progress, verdicts = analysis(checksPerStep=1), Progress(), []
    for _ in range(10):
        decision = judge(spec, progress, ok())
        verdicts.append((decision.verdict, decision.weight))
        progress = decision.progress
        if decision.final:
            break
    assert verdicts == [("start", 10), ("advance", 20), ("advance", 30), ("promote", 100)]


def test_failures_are_cumulative_across_steps():
    spec = analysis(checksPerStep=1, failureLimit=2)
    first = judge(spec, Progress(1, 0, 0, 10), ok(errors=50))
    assert first.verdict == "hold"
    second = judge(spec, first.progress, ok())
    assert second.verdict == "advance" and second.progress.checks_failed == 1
    third = judge(spec, second.progress, ok(errors=50))
    assert third.verdict == "rollback" and third.weight == 0


def test_progress_round_trips_through_status():
    progress = Progress(step=2, checks_passed=1, checks_failed=1, weight=20)
    assert Progress.from_status(progress.to_status(), {"stable": 80, "canary": 20}) == progress
    assert Progress.from_status(None, None) == Progress()


NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last", "interval", "due", "wait"),
    [
        (None, "1m", True, 0),
        (NOW - timedelta(seconds=59), "1m", False, 1),
        (NOW - timedelta(seconds=60), "1m", True, 0),
        ("2025-01-01T11:58:00Z", "1m30s", True, 0),
        ("2025-01-01T11:59:30Z", "1m30s", False, 60),
    ],
)
def test_check_due(last, interval, due, wait):
    assert check_due(last, interval, NOW) is due
    assert seconds_until_check(last, interval, NOW) == pytest.approx(wait)


def test_history_keeps_the_newest():
    history = None
    for i in range(HISTORY_LIMIT + 5):
        history = append_verdict(history, {"verdict": "RolledBack", "reason": str(i)})
    assert len(history) == HISTORY_LIMIT
    assert history[0]["reason"] == "5" and history[-1]["reason"] == str(HISTORY_LIMIT + 4)
    assert append_verdict([{"verdict": "Promoted"}], {"verdict": "RolledBack"}, limit=1) == [
        {"verdict": "RolledBack"}
    ]


def test_verdict_entry():
    rollback = judge(analysis(failureLimit=1), STEP2, ok(errors=500))
    entry = verdict_entry(rollback, "iris-v2", NOW)
    assert entry["verdict"] == "RolledBack" and entry["modelVersion"] == "iris-v2"
    assert "maxErrorRate" in entry["reason"]
    Verdict.model_validate(entry)
    promote = judge(analysis(), TOP, ok())
    assert verdict_entry(promote, "iris-v2", "2025-01-01T12:00:00Z")["verdict"] == "Promoted"
    with pytest.raises(ValueError, match="only promote and rollback"):
        verdict_entry(judge(analysis(), STEP2, None), "iris-v2", NOW)
