"""Run an iterator one step ahead in a thread, so producing the next item
overlaps using the last.

The snapshot reads (decodes Parquet, waits for parsed CSV) and computes
statistics in turns on one thread; both spend their time in Arrow code that
releases the GIL, so on two cores a thread each makes the slower of the two,
not their sum, the time per batch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty, Full, Queue
from typing import TypeVar

T = TypeVar("T")

# Items produced but not yet taken: enough to smooth uneven batches; each
# one is memory held, so few.
AHEAD = 2
_POLL_SECONDS = 0.1
_END = object()


@contextmanager
def prefetched(items: Iterator[T], ahead: int = AHEAD) -> Iterator[Iterator[T]]:
    """The same items in the same order, produced by a thread. An exception
    the iterator raises is raised to the consumer at the same place. Leaving
    the block stops the thread (after the item it is producing)."""
    queue: Queue[tuple[object, BaseException | None]] = Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item: object, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                queue.put((item, error), timeout=_POLL_SECONDS)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put(_END, exc)
            return
        put(_END)

    def consume() -> Iterator[T]:
        while True:
            try:
                item, error = queue.get(timeout=_POLL_SECONDS)
            except Empty:
                if not thread.is_alive() and queue.empty():
                    raise RuntimeError("the prefetch thread ended without a result") from None
                continue
            if error is not None:
                raise error
            if item is _END:
                return
            yield item  # type: ignore[misc]

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()
