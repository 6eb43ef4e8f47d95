"""Conditions keep their transition time until the status really flips; times
are written and read one way."""

from datetime import UTC, datetime

import pytest

from flywheel.api.conditions import FALSE, TRUE, ConditionUpdate, merge_conditions
from flywheel.api.stamps import as_time, format_stamp, parse_stamp


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


def test_times_are_written_and_read_as_the_api_writes_them():
    moment = datetime(2026, 12, 4, 15, 59, 16, tzinfo=UTC)
    assert format_stamp(moment) == "2026-12-04T15:59:16Z"
    assert parse_stamp("2026-12-04T15:59:16Z") == moment
    assert parse_stamp("2026-12-04T16:59:16+01:00") == moment  # an offset a person wrote
    assert as_time("2026-12-04T15:59:16Z") == moment
    assert as_time(moment) is moment and as_time(None) is None
    with pytest.raises(ValueError):
        parse_stamp("yesterday")
