"""Two million logged rows in bounded memory: the window's files are streamed
batch by batch, only the feature and time columns are read, and the sample
never holds more than 1.25 times its capacity.

The measurement runs in a fresh process (peak RSS is per process) and is
printed (`pytest -s`); the bound asserted is loose on purpose, far below
what holding every row would take."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FILES = 20
ROWS_PER_FILE = 100_000
NOW = datetime(2026, 3, 1, 14, 0, tzinfo=UTC)

MEASURE = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from datetime import datetime, timedelta
    from flywheel.workloads.allocator import use_system_allocator
    use_system_allocator()  # as the command does: before pyarrow loads
    from flywheel.workloads.drift_data import (
        Reservoir, Spool, Window, current_types, kinds_of, list_current, read_current, side_data,
    )

    PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20

    def rss_mb():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_MB

    class Peak(threading.Thread):
        # Not ru_maxrss: Linux carries it over from the forking (pytest) process
        # through exec. The RSS sampled every 5 ms during the read is the read's own.
        def __init__(self):
            super().__init__(daemon=True)
            self.peak, self.done = rss_mb(), False
        def run(self):
            while not self.done:
                self.peak = max(self.peak, rss_mb())
                time.sleep(0.005)

    uri, now, capacity = sys.argv[1], datetime.fromisoformat(sys.argv[2]), int(sys.argv[3])
    features = ["f0", "f1", "f2", "f3"]
    window = Window.ending(now, timedelta(hours=2))
    files = list_current(uri, window, None)
    kinds = kinds_of(current_types(files, Spool("/tmp")), features)
    side_data(Reservoir(10, 0), features, kinds)  # pandas' import and first use
    before = rss_mb()
    watch = Peak()
    watch.start()
    started = time.monotonic()
    reservoir = Reservoir(capacity, seed=0)
    read_current(files, features, window, reservoir, Spool("/tmp"))
    side = side_data(reservoir, features, kinds)
    seconds = time.monotonic() - started
    watch.done = True
    watch.join()
    peak = max(watch.peak, rss_mb())
    print(json.dumps({
        "files": len(files), "rows": side.rows, "sampled": side.sampled,
        "baseline_mb": round(before, 1), "peak_mb": round(peak, 1),
        "growth_mb": round(peak - before, 1), "seconds": round(seconds, 2),
    }))
    """
)


def write_files(root) -> int:
    """FILES files of ROWS_PER_FILE rows in two hours of two model versions,
    with columns the check does not read (a wide text column among them)."""
    rng = np.random.default_rng(0)
    written = 0
    for index in range(FILES):
        version = f"v{index % 2}"
        moment = NOW - timedelta(minutes=30 + 60 * (index % 2))
        folder = root / version / f"hour={moment.strftime('%Y-%m-%dT%H')}"
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                **{f"f{i}": rng.normal(size=ROWS_PER_FILE) for i in range(6)},
                "_flywheel_time": pa.array([moment] * ROWS_PER_FILE, pa.timestamp("ms", tz="UTC")),
                "_flywheel_prediction": pa.array(
                    np.char.add("class-", rng.integers(0, 50, ROWS_PER_FILE).astype(str))
                ),
                "_flywheel_model_version": pa.array([version] * ROWS_PER_FILE),
            }
        )
        pq.write_table(table, folder / f"pod-1-{index:06d}.parquet", row_group_size=50_000)
        written += ROWS_PER_FILE
    return written


def test_two_million_rows_in_bounded_memory(tmp_path):
    root = tmp_path / "inference-logs" / "ns" / "svc"
    total = write_files(root)
    assert total == 2_000_000

    done = subprocess.run(
        [sys.executable, "-c", MEASURE, root.as_uri(), NOW.isoformat(), "200000"],
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\ndrift-check reading {total} logged rows: {figures}")
    assert (figures["files"], figures["rows"], figures["sampled"]) == (FILES, total, 200_000)
    # Holding the rows read (4 float64 features + time) would be 80 MB, whole rows
    # far more; the sample is 200,000 x 4 values (6.4 MB) held at most 1.25 times.
    assert figures["growth_mb"] < 120, figures
