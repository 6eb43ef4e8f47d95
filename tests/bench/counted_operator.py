"""`flywheel run`, counting its own HTTP requests: the operator-scale
benchmark's view of "API requests per object".

The apiserver's request metrics cannot tell the operator's requests from the
controller-manager's, the scheduler's and kwok's (they all use the same
admin certificate here), so the operator process counts what it sends: kopf's
aiohttp requests (watches, finalizers, status patches) and the kubernetes
client's urllib3 requests (Jobs, Deployments, Services, Pods), keyed by
host:port, method and the resource the path names (`jobs`,
`trainingruns/status`, `events`, `trainingruns?watch`). MLflow's requests
go through urllib3 too and are told apart by their host. Every half second
the counts go to the JSON file named by FLYWHEEL_BENCH_COUNTS. Nothing of
the operator itself changes.

Where the memory goes: run the benchmark with BENCH_TRACEMALLOC_DUMP=<file>;
the operator traces its allocations (8 frames) and every 20 s the file gets
the 40 largest sites still alive. Tracing slows the operator: its other
figures are then not comparable. Lighter: BENCH_OBJECTS_DUMP=<file>, and
on SIGUSR1 the file gets the bytes the big holders keep (the child cache,
kopf's bodies and memories, tasks), the commonest live types and Python's
allocator statistics (arena space in use and kept free).

    python counted_operator.py run --metrics-port 0 ...   (the `flywheel` CLI's arguments)
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time

import aiohttp
import urllib3.connectionpool

COUNTS: collections.Counter[str] = collections.Counter()
_LOCK = threading.Lock()


def resource_of(url: str) -> str:
    """The collection a Kubernetes path names, with its subresource:
    /apis/batch/v1/namespaces/ns/jobs/x -> jobs; .../trainingruns/x/status ->
    trainingruns/status; a watch is marked `?watch`. MLflow paths keep theirs."""
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "2.0"]:  # MLflow's REST API
        return path
    if parts[:1] == ["api"]:
        parts = parts[2:]  # api, v1
    elif parts[:1] == ["apis"]:
        parts = parts[3:]  # apis, group, version
    else:
        return path
    if parts[:1] == ["namespaces"] and len(parts) > 2:
        parts = parts[2:]
    resource = "/".join(parts[:1] + parts[2:3])
    return resource + ("?watch" if "watch=" in query else "")


def _count(host: str, method: str, url: str) -> None:
    with _LOCK:
        COUNTS[f"{host} {method.upper()} {resource_of(url)}"] += 1


def _patch_urllib3() -> None:
    original = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def urlopen(self, method, url, *args, **kwargs):
        # Retries re-enter urlopen: each attempt is a request the server sees.
        _count(f"{self.host}:{self.port}", method, url)
        return original(self, method, url, *args, **kwargs)

    urllib3.connectionpool.HTTPConnectionPool.urlopen = urlopen


def _patch_aiohttp() -> None:
    original = aiohttp.ClientSession._request

    async def request(self, method, str_or_url, *args, **kwargs):
        url = aiohttp.client.URL(str(str_or_url))
        _count(f"{url.host}:{url.port}", method, str(url.relative()))
        return await original(self, method, str_or_url, *args, **kwargs)

    aiohttp.ClientSession._request = request


def _dump_forever(path: str) -> None:
    while True:
        with _LOCK:
            snapshot = dict(COUNTS)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(snapshot, f)
        os.replace(tmp, path)
        time.sleep(0.5)


def _dump_memory_forever(path: str) -> None:
    import tracemalloc

    while True:
        time.sleep(20)
        stats = tracemalloc.take_snapshot().statistics("traceback")
        total = sum(stat.size for stat in stats)
        lines = [
            f"{time.strftime('%H:%M:%S')} traced {total / 2**20:.1f} MiB in {len(stats)} sites"
        ]
        for stat in stats[:40]:
            lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d} blocks")
            lines += [f"    {frame.filename}:{frame.lineno}" for frame in stat.traceback]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")


def _not_followed() -> tuple[type, ...]:
    """What _deep counts but does not walk into: shared by everything."""
    import asyncio
    import concurrent.futures
    import logging
    import types

    return (
        type, types.ModuleType, types.FunctionType, types.MethodType,
        asyncio.AbstractEventLoop, threading.Thread, concurrent.futures.Executor, logging.Logger,
    )  # fmt: skip


def _deep(obj, seen: set[int], not_followed: tuple[type, ...]) -> int:
    """Bytes of obj and what it holds, each object counted once across calls;
    follows containers and plain instances, not types, modules or functions."""
    import gc

    total, stack = 0, [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, not_followed):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset, collections.deque)):
            stack.extend(o)
        elif hasattr(o, "__dict__") or hasattr(type(o), "__slots__"):
            stack.extend(gc.get_referents(o))
    return total


def _dump_objects_on_signal(path: str) -> None:
    """SIGUSR1: write the bytes the big holders keep, the commonest live
    types and obmalloc's arena statistics."""
    import gc
    import signal

    def dump(*_):
        from flywheel.integrations import children, watched

        not_followed = _not_followed()
        objects = gc.get_objects()
        seen: set[int] = set()

        def held(*roots) -> int:
            return sum(_deep(root, seen, not_followed) for root in roots)

        def held_by_type(name: str) -> int:
            return held(*(o for o in objects if type(o).__name__ == name))

        sizes = {
            "watched": held(watched._objects),
            "last_applied": held(children._last_applied),
            "kopf bodies": held(*(o._src for o in objects if type(o).__name__ == "Body")),
        }
        for name in ("ResourceMemory", "Task", "coroutine", "Context", "Future", "TimerHandle"):
            sizes[name] = held_by_type(name)
        counts = collections.Counter(type(o).__name__ for o in objects)
        with open(path, "w") as f:
            f.write(repr({k: f"{v / 2**20:.1f} MiB" for k, v in sizes.items()}) + "\n")
            f.write(repr(counts.most_common(40)) + "\n")
        # _debugmallocstats writes to the C stderr: point it at the file meanwhile.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        saved = os.dup(2)
        os.dup2(fd, 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(fd)

    signal.signal(signal.SIGUSR1, dump)


def main() -> None:
    if os.environ.get("BENCH_OBJECTS_DUMP"):
        _dump_objects_on_signal(os.environ["BENCH_OBJECTS_DUMP"])
    if os.environ.get("BENCH_TRACEMALLOC_DUMP"):
        import tracemalloc

        tracemalloc.start(8)
        threading.Thread(
            target=_dump_memory_forever, args=(os.environ["BENCH_TRACEMALLOC_DUMP"],), daemon=True
        ).start()
    _patch_urllib3()
    _patch_aiohttp()
    threading.Thread(
        target=_dump_forever, args=(os.environ["FLYWHEEL_BENCH_COUNTS"],), daemon=True
    ).start()
    from flywheel.cli import main as flywheel

    flywheel(sys.argv[1:], prog_name="flywheel")


if __name__ == "__main__":
    main()
