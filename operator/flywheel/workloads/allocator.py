"""How the commands' Arrow uses memory: glibc's malloc instead of mimalloc,
pyarrow's default, and a bounded number of CPU threads.

The snapshot and the drift check are streaming passes in memory-limited
pods. mimalloc keeps freed pages for reuse, which measured 10-20 MB more
peak RSS in a snapshot for no speed gain, and in a drift check of
1,000,000 logged rows 347-352 MiB against 313-314 (glibc's free pages go
back to the system with `malloc_trim`, drift_data.release_freed_memory).

Arrow's C++ code takes its default pool from ARROW_DEFAULT_MEMORY_POOL,
read once as pyarrow loads: so this runs before pyarrow is imported.
`pa.set_memory_pool` alone changes only what Python-level calls allocate
(the drift check's reading kept using mimalloc). Process-wide: only the
commands call it.
"""

from __future__ import annotations

import os
import sys


def use_system_allocator() -> None:
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    if "pyarrow" in sys.modules:  # already loaded (a test process): what can still change
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())


# The snapshot decodes Parquet columns on Arrow's CPU pool, which has a thread
# per core of the node, not of the pod. Two threads took the bench's decoding
# from 1.1 to 0.7 s. More each keep a malloc arena of their own: a snapshot of
# a 150 MiB file grew the process by 82-89 MiB with 8 or 32 threads, against
# 55-61 with two (test_memory_stays_bounded_on_a_large_file runs as on 32 cores).
ARROW_THREADS = 2


def bound_arrow_threads(limit: int = ARROW_THREADS) -> None:
    """At most `limit` threads in Arrow's CPU pool (after use_system_allocator:
    this loads pyarrow)."""
    import pyarrow as pa

    pa.set_cpu_count(min(pa.cpu_count(), limit))
