"""The resync: every object reconciled again every FLYWHEEL_RESYNC_SECONDS.

It is the safety net behind the wake-ups (wake.py): a pod that finds no node,
a dependency that comes back, a watch event missed while a watch reconnected.

Why one loop and not kopf.timer: kopf puts its finalizer on every object
that has a timer, so that it can stop the timer before the object goes.
That was one more write per object (1,000 at 1,000 objects), a second round
of kopf's processing before an object's first reconcile (kopf adds the
finalizer, then waits for the next watch event to run the handlers), an
asyncio task per object, and an object deleted while no operator ran stayed
until someone removed the finalizer by hand.

Here a watch-event handler keeps each object's latest body; one loop
reconciles the objects whose turn has come, a few at a time on kopf's
handler threads, and writes the status they assess. An object leaves the
schedule with its DELETED event, or as soon as it is marked for deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ..api.common import GROUP, VERSION
from ..api.kinds import Kind
from ..integrations import kube
from ..integrations.kube import FIELD_MANAGER

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (plural, namespace, name)
# How often the loop looks for objects whose turn has come.
TICK_SECONDS = 0.5


@dataclass
class _Entry:
    kind: Kind
    handler: Callable[..., Any]
    body: Mapping[str, Any]
    due: float
    running: bool = False


class Schedule:
    """When each object is next due, with its latest body. Thread-safe: the
    watch handlers feed it on the event loop, the resyncs finish on threads."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._entries: dict[Key, _Entry] = {}
        # (due, tie-breaker, key); an item whose due no longer matches its
        # entry's was superseded and is skipped when it comes up.
        self._heap: list[tuple[float, int, Key]] = []
        self._order = itertools.count()
        self._guard = threading.Lock()

    def saw(self, key: Key, kind: Kind, handler: Callable[..., Any], body, now: float) -> None:
        """A watch event: a new object is first due one interval from now."""
        with self._guard:
            entry = self._entries.get(key)
            if entry is not None:
                entry.body = body
                return
            self._entries[key] = _Entry(kind, handler, body, now + self.interval)
            heapq.heappush(self._heap, (now + self.interval, next(self._order), key))

    def forget(self, key: Key) -> bool:
        """The object is gone or going; whether it was scheduled."""
        with self._guard:
            return self._entries.pop(key, None) is not None

    def take_due(self, now: float) -> list[tuple[Key, _Entry]]:
        """The objects whose turn has come, marked running until `done`."""
        taken = []
        with self._guard:
            while self._heap and self._heap[0][0] <= now:
                due, _, key = heapq.heappop(self._heap)
                entry = self._entries.get(key)
                if entry is None or entry.due != due or entry.running:
                    continue
                entry.running = True
                taken.append((key, entry))
        return taken

    def done(self, key: Key, now: float, delay: float | None = None) -> None:
        """A resync ended: the object is due again after `delay` (an interval)."""
        with self._guard:
            entry = self._entries.get(key)
            if entry is None:  # deleted meanwhile
                return
            entry.running = False
            entry.due = now + (self.interval if delay is None else delay)
            heapq.heappush(self._heap, (entry.due, next(self._order), key))

    def __len__(self) -> int:
        with self._guard:
            return len(self._entries)


class Resync:
    """The schedule, and the loop that works through it."""

    def __init__(self, interval: float, concurrency: int) -> None:
        self.schedule = Schedule(interval)
        self.concurrency = concurrency
        # kopf hands its indexes, and the context its Events are posted
        # from, only to handlers: the first watch event hands them on.
        self._indexes: dict[str, kopf.Index] = {}
        self._task: asyncio.Task | None = None
        self.executor: Any = None  # kopf's handler threads (set by the caller)

    def on_event(self, kind: Kind, handler, event, body, namespace, name, kwargs) -> bool:
        """Called by each kind's watch handler, on kopf's event loop. Whether
        the object is gone or going (it then leaves the schedule)."""
        key = (kind.plural, namespace, name)
        meta = body.get("metadata") or {}
        if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
            self.schedule.forget(key)
            return True
        self.schedule.saw(key, kind, handler, body, time.monotonic())
        if self._task is None:
            self._indexes = {k: v for k, v in kwargs.items() if isinstance(v, kopf.Index)}
            # The task carries this handler's context: kopf.event needs it.
            self._task = asyncio.get_running_loop().create_task(self._run())
        return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.concurrency)
        while True:
            try:
                for key, entry in self.schedule.take_due(time.monotonic()):
                    await slots.acquire()
                    context = contextvars.copy_context()
                    work = loop.run_in_executor(
                        self.executor, context.run, self._resync, key, entry
                    )
                    work.add_done_callback(lambda _: slots.release())
            except Exception:  # the loop must outlive any one failure: it is the safety net
                log.exception("the resync loop failed; it goes on")
            await asyncio.sleep(TICK_SECONDS)

    def _resync(self, key: Key, entry: _Entry) -> None:
        delay = None
        try:
            patch = kopf.Patch()
            entry.handler(body=entry.body, patch=patch, **self._indexes)
            status = dict(patch.get("status") or {})
            if status:
                write_status(key, status)
        except kopf.TemporaryError as err:
            delay = err.delay
            log.warning("resync of %s %s/%s: %s", entry.kind.kind, key[1], key[2], err)
        except ApiException as err:
            if err.status == 404:  # gone; its DELETED event takes it off
                return
            log.warning("resync of %s %s/%s: %s", entry.kind.kind, key[1], key[2], err.reason)
        except Exception:  # a bug: say where, and try again next time
            log.exception("resync of %s %s/%s failed", entry.kind.kind, key[1], key[2])
        finally:
            self.schedule.done(key, time.monotonic(), delay)


def write_status(key: Key, status: dict[str, Any]) -> None:
    """A merge patch of the status subresource, as kopf writes it."""
    plural, namespace, name = key
    client.CustomObjectsApi(kube.api()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, name, {"status": status}, field_manager=FIELD_MANAGER
    )
