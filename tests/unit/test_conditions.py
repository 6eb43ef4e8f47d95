"""Conditions keep their transition time until the status really flips."""

from flywheel.api.conditions import FALSE, TRUE, ConditionUpdate, merge_conditions


def test_transition_time_moves_only_when_status_flips():
    first = merge_conditions(None, [ConditionUpdate("Ready", FALSE, "Pending", "wait")], 1, "T1")
    same = merge_conditions(first, [ConditionUpdate("Ready", FALSE, "Other", "still")], 2, "T2")
    flipped = merge_conditions(same, [ConditionUpdate("Ready", TRUE, "Done", "ok")], 2, "T3")
    assert first[0]["lastTransitionTime"] == "T1"
    assert same[0]["lastTransitionTime"] == "T1"
    assert same[0]["reason"] == "Other" and same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "T3"


def test_one_entry_per_type_ready_first():
    conds = merge_conditions(
        [
            {
                "type": "Custom",
                "status": TRUE,
                "reason": "x",
                "message": "",
                "lastTransitionTime": "T0",
            }
        ],
        [ConditionUpdate("Accepted", TRUE, "Valid", ""), ConditionUpdate("Ready", FALSE, "W", "")],
        1,
        "T1",
    )
    assert [c["type"] for c in conds] == ["Ready", "Accepted", "Custom"]
    assert merge_conditions(conds, [ConditionUpdate("Ready", FALSE, "W", "")], 1, "T9") == conds
