"""The resync loop's schedule and one resync's outcome (controllers/resync.py).

The loop itself runs in every integration test (FLYWHEEL_RESYNC_SECONDS=2)."""

from __future__ import annotations

import asyncio

import kopf
import pytest
from kubernetes.client.exceptions import ApiException

from flywheel.api.kinds import DATASET
from flywheel.controllers import resync as resync_module
from flywheel.controllers.resync import Resync, Schedule

KEY = ("datasets", "team-a", "iris")


def body(name: str = "iris", **meta) -> dict:
    return {"metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}", **meta}}


def noop(**_):
    pass


class EmptyIndex(kopf.Index):
    def __getitem__(self, key):
        raise KeyError(key)

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def test_a_new_object_is_due_one_interval_after_it_was_first_seen():
    schedule = Schedule(interval=30)
    schedule.saw(KEY, DATASET, noop, body(), now=100)
    schedule.saw(KEY, DATASET, noop, body(), now=120)  # later events do not postpone it
    assert schedule.take_due(129.9) == []
    [(key, entry)] = schedule.take_due(130)
    assert key == KEY and entry.kind is DATASET


def test_the_latest_body_is_the_one_resynced():
    schedule = Schedule(interval=30)
    schedule.saw(KEY, DATASET, noop, body(), now=0)
    newer = body(resourceVersion="2")
    schedule.saw(KEY, DATASET, noop, newer, now=5)
    [(_, entry)] = schedule.take_due(30)
    assert entry.body is newer


def test_a_running_resync_is_not_started_twice_and_is_due_again_after_it_ends():
    schedule = Schedule(interval=30)
    schedule.saw(KEY, DATASET, noop, body(), now=0)
    assert len(schedule.take_due(30)) == 1
    assert schedule.take_due(1000) == []  # still running
    schedule.done(KEY, now=31)
    assert schedule.take_due(60) == []
    assert len(schedule.take_due(61)) == 1
    schedule.done(KEY, now=62, delay=5)  # a temporary error asked for 5 s
    assert len(schedule.take_due(67)) == 1


def test_a_forgotten_object_is_never_due_again():
    schedule = Schedule(interval=30)
    schedule.saw(KEY, DATASET, noop, body(), now=0)
    other = ("datasets", "team-a", "other")
    schedule.saw(other, DATASET, noop, body("other"), now=0)
    assert schedule.forget(KEY)
    assert [k for k, _ in schedule.take_due(30)] == [other]
    schedule.done(KEY, now=31)  # a resync of it that was running when it went
    assert schedule.take_due(10_000) == []
    assert len(schedule) == 1


def test_deleted_and_deleting_objects_leave_the_schedule():
    resync = Resync(interval=30, concurrency=1)
    resync.schedule.saw(KEY, DATASET, noop, body(), now=0)
    assert resync.on_event(DATASET, noop, {"type": "DELETED"}, body(), "team-a", "iris", {})
    assert len(resync.schedule) == 0
    other = ("datasets", "team-a", "going")
    resync.schedule.saw(other, DATASET, noop, body("going"), now=0)
    going = body("going", deletionTimestamp="2026-12-05T00:00:00Z")
    assert resync.on_event(DATASET, noop, {"type": "MODIFIED"}, going, "team-a", "going", {})
    assert len(resync.schedule) == 0


@pytest.fixture
def written(monkeypatch):
    writes: list = []
    monkeypatch.setattr(resync_module, "write_status", lambda key, s: writes.append(s))
    return writes


def taken(resync: Resync, handler) -> tuple:
    resync.schedule.saw(KEY, DATASET, handler, body(), now=0)
    [(key, entry)] = resync.schedule.take_due(30)
    return key, entry


def test_a_resync_writes_the_status_its_reconcile_assessed(written):
    def reconcile(body, patch, **_):
        patch.status.update({"phase": "Ready"})

    resync = Resync(interval=30, concurrency=1)
    resync._resync(*taken(resync, reconcile))
    assert written == [{"phase": "Ready"}]


def test_a_converged_object_is_not_written(written):
    resync = Resync(interval=30, concurrency=1)
    resync._resync(*taken(resync, noop))
    assert written == []


def test_a_temporary_error_brings_the_next_resync_forward(written, monkeypatch):
    def unavailable(**_):
        raise kopf.TemporaryError("Kubernetes API: 503 Service Unavailable", delay=10)

    resync = Resync(interval=30, concurrency=1)
    monkeypatch.setattr(resync_module.time, "monotonic", lambda: 1000.0)
    resync._resync(*taken(resync, unavailable))
    assert resync.schedule.take_due(1009.9) == []
    assert len(resync.schedule.take_due(1010)) == 1


def test_a_failing_reconcile_is_logged_and_tried_again_next_interval(written, caplog, monkeypatch):
    def broken(**_):
        raise KeyError("spec")

    resync = Resync(interval=30, concurrency=1)
    monkeypatch.setattr(resync_module.time, "monotonic", lambda: 1000.0)
    resync._resync(*taken(resync, broken))
    assert "resync of Dataset team-a/iris failed" in caplog.text
    assert len(resync.schedule.take_due(1030)) == 1


def test_an_object_gone_before_its_status_write_is_not_an_error(monkeypatch, caplog):
    def gone(key, status):
        raise ApiException(status=404, reason="Not Found")

    def reconcile(body, patch, **_):
        patch.status.update({"phase": "Ready"})

    monkeypatch.setattr(resync_module, "write_status", gone)
    resync = Resync(interval=30, concurrency=1)
    resync._resync(*taken(resync, reconcile))
    assert "resync" not in caplog.text


def test_the_loop_resyncs_each_object_every_interval_and_outlives_a_failure(
    written, monkeypatch, caplog
):
    monkeypatch.setattr(resync_module, "TICK_SECONDS", 0.01)
    calls: list[str] = []

    def reconcile(body, patch, **indexes):
        calls.append(body["metadata"]["name"])
        assert set(indexes) == {"model_versions"}  # kopf's indexes, handed on

    async def scenario():
        resync = Resync(interval=0.05, concurrency=2)
        take_due, failures = resync.schedule.take_due, []

        def fails_once(now):
            if not failures:
                failures.append(now)
                raise RuntimeError("boom")
            return take_due(now)

        resync.schedule.take_due = fails_once
        indexes = {"model_versions": EmptyIndex(), "logger": object()}
        for name in ("a", "b"):
            assert not resync.on_event(
                DATASET, reconcile, {"type": None}, body(name), "team-a", name, indexes
            )
        await asyncio.sleep(0.5)
        await resync.stop()
        stopped = len(calls)
        await asyncio.sleep(0.1)
        return stopped

    stopped = asyncio.run(scenario())
    assert calls.count("a") >= 3 and calls.count("b") >= 3, calls
    assert len(calls) == stopped, "a resync ran after stop()"
    assert "the resync loop failed; it goes on" in caplog.text
