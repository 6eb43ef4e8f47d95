"""Model gates, table-driven."""

import pytest

from flywheel.api.trainingrun import Gate
from flywheel.policy.gates import evaluate_gates

ACC_90 = Gate(metric="accuracy", op=">=", threshold=0.9)
RMSE_5 = Gate(metric="rmse", op="<", threshold=5)


@pytest.mark.parametrize(
    ("gates", "metrics", "beat", "production", "passed", "says"),
    [
        ([ACC_90], {"accuracy": 0.95}, None, None, True, "1 gate(s) passed"),
        ([ACC_90], {"accuracy": 0.9}, None, None, True, "passed"),
        ([ACC_90], {"accuracy": 0.85}, None, None, False, "accuracy = 0.85, needs >= 0.9"),
        (
            [ACC_90],
            {"f1": 0.99},
            None,
            None,
            False,
            "accuracy was not logged by the run (logged: f1)",
        ),
        ([RMSE_5], {"rmse": 4.0}, None, None, True, "passed"),
        (
            [],
            {"accuracy": 0.8},
            "accuracy",
            {"accuracy": 0.9},
            False,
            "does not beat production's 0.9",
        ),
        ([], {"accuracy": 0.95}, "accuracy", {"accuracy": 0.9}, True, "passed"),
        ([], {"rmse": 3.0}, "rmse", {"rmse": 4.0}, True, "passed"),  # lower is better
        ([], {"rmse": 5.0}, "rmse", {"rmse": 4.0}, False, "does not beat"),
        ([], {"accuracy": 0.5}, "accuracy", None, True, "passed"),  # nothing in production yet
        ([ACC_90, RMSE_5], {"accuracy": 0.5, "rmse": 9}, None, None, False, "; rmse = 9"),
    ],
)
def test_gates(gates, metrics, beat, production, passed, says):
    verdict = evaluate_gates(gates, metrics, beat, production)
    assert verdict.passed is passed
    assert says in verdict.message
    assert all(r["passed"] is not None for r in verdict.results)
