"""The snapshot's read-ahead thread: same items, same errors, and it stops."""

from __future__ import annotations

import threading
import time

import pytest

from flywheel.workloads.prefetch import prefetched


def test_items_arrive_in_order():
    with prefetched(iter(range(1000))) as items:
        assert list(items) == list(range(1000))


def test_an_error_is_raised_after_the_items_before_it():
    def failing():
        yield from (1, 2, 3)
        raise ValueError("bad bytes at row 4")

    seen = []
    with prefetched(failing()) as items, pytest.raises(ValueError, match="bad bytes at row 4"):
        for item in items:
            seen.append(item)
    assert seen == [1, 2, 3]


def test_leaving_early_stops_the_thread_and_reads_little_ahead():
    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    before = threading.active_count()
    with prefetched(endless(), ahead=2) as items:
        assert next(items) == 0
        time.sleep(0.3)  # time for the thread to fill the queue, and wait
    assert threading.active_count() == before
    # One taken, two queued, one produced and waiting for room.
    assert len(produced) <= 4
