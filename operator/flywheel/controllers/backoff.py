"""Backing off from a dependency that is down (MLflow, the artifact store).

The resync timer reconciles every object every few seconds. While MLflow is
unreachable, trying it again at that pace only adds load to a server coming
back and writes the same condition over and over; so after a failure the
next attempt waits a delay that doubles up to a cap. Kept in memory, per key:
an operator restart starts over with the short delay, which is harmless.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Pending:
    failures: int
    next_attempt: float
    version: object = None  # what failed (a generation): a new one starts over


class Backoff:
    def __init__(self, first: float, cap: float, clock=time.monotonic) -> None:
        self.first, self.cap, self.clock = first, cap, clock
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def due(self, key: str, version: object = None) -> bool:
        """True unless `key` failed recently, at this version, and its delay has not passed."""
        with self._lock:
            pending = self._pending.get(key)
        return pending is None or pending.version != version or self.clock() >= pending.next_attempt

    def failed(self, key: str, version: object = None) -> tuple[int, float]:
        """Count a failure; (failures in a row, seconds until the next attempt).
        A failure at a new version replaces the old version's count."""
        with self._lock:
            pending = self._pending.get(key)
            if pending is None or pending.version != version:
                pending = _Pending(0, 0.0, version)
            pending.failures += 1
            delay = min(self.first * 2 ** (pending.failures - 1), self.cap)
            pending.next_attempt = self.clock() + delay
            self._pending[key] = pending
            return pending.failures, delay

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._pending.pop(key, None)

    def forget(self, prefix: str) -> None:
        """Drop every key of an object that is gone."""
        with self._lock:
            for key in [k for k in self._pending if k.startswith(prefix)]:
                del self._pending[key]
