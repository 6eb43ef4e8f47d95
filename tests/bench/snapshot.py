"""Dataset snapshot: `flywheel dataset-snapshot` vs `sha256sum` of the same files.

The data: 1 GiB in all, half CSV and half Parquet (snappy), each half in 8
files under its own prefix (one Dataset per format): an id, 6 floats, 2
integers, 3 categorical text columns, a boolean and a date. Generated once
into .cache/bench/snapshot (not timed) and reused while its size matches.

flywheel reads each Dataset with a schema of every column (types, min/max,
allowed values, not-null) and quality rules, so the time includes parsing,
validation, the profile and hashing; sha256sum only reads and hashes, which
is the disk and hash bound. Each side runs four times, in turn: the first
warms the page cache (the files fit in memory, and dropping the cache needs
privileges), and the median of the other three is the figure, because one
warm run of either side moved by 10-20% between runs on this machine.
Neither is pinned: pyarrow's readers may use both cores, sha256sum uses one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench_report import goal, ratio
from common import CACHE, VENV_BIN, clean_env, log, measure

WORK = CACHE / "snapshot"
WARM_RUNS = 3
FILES = 8
CATEGORIES = ["north", "south", "east", "west", "central"]


def table(rows: int, seed: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    start = seed * 10_000_000
    columns = {"id": np.arange(start, start + rows, dtype=np.int64)}
    for i in range(6):
        columns[f"x{i}"] = np.round(rng.normal(100 * i, 10 + i, rows), 4)
    columns["count"] = rng.poisson(30, rows).astype(np.int64)
    columns["age"] = rng.integers(18, 90, rows).astype(np.int64)
    for name in ("region", "segment", "channel"):
        columns[name] = pa.DictionaryArray.from_arrays(
            rng.integers(0, len(CATEGORIES), rows).astype(np.int32), CATEGORIES
        ).cast(pa.string())
    columns["active"] = rng.random(rows) < 0.7
    days = np.datetime64("2015-01-01") + rng.integers(0, 3650, rows).astype("timedelta64[D]")
    columns["signup"] = days.astype("datetime64[s]")
    return pa.table(columns)


SCHEMA = {
    "columns": [
        {"name": "id", "type": "integer", "nullable": False, "min": 0},
        *[{"name": f"x{i}", "type": "float", "min": -1e6, "max": 1e6} for i in range(6)],
        {"name": "count", "type": "integer", "min": 0},
        {"name": "age", "type": "integer", "min": 0, "max": 130},
        *[
            {"name": name, "type": "string", "allowedValues": CATEGORIES}
            for name in ("region", "segment", "channel")
        ],
        {"name": "active", "type": "boolean"},
        {"name": "signup", "type": "datetime"},
    ],
    "target": "active",
}


def generate(data_format: str, total_bytes: int) -> tuple[Path, list[Path]]:
    """FILES files of about total_bytes / FILES each; kept while they add up."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    folder = WORK / f"data-{data_format}"
    marker = folder / f".size-{total_bytes}"
    files = sorted(folder.glob(f"*.{data_format}"))
    if marker.exists() and len(files) == FILES:
        return folder, files
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    target = total_bytes // FILES
    probe_rows = 200_000
    probe = folder / f"probe.{data_format}"
    if data_format == "csv":
        pacsv.write_csv(table(probe_rows, 0), probe)
    else:
        pq.write_table(table(probe_rows, 0), probe)
    rows = int(probe_rows * target / probe.stat().st_size)
    probe.unlink()
    for n in range(FILES):
        path = folder / f"part-{n:03d}.{data_format}"
        if data_format == "csv":
            pacsv.write_csv(table(rows, n), path)
        else:
            pq.write_table(table(rows, n), path, row_group_size=256 * 1024)
    marker.write_text("")
    return folder, sorted(folder.glob(f"*.{data_format}"))


def spec(folder: Path, data_format: str) -> str:
    return json.dumps(
        {
            "source": {"uri": folder.as_uri() + "/", "format": data_format},
            "schema": SCHEMA,
            "quality": {"minRows": 1000, "maxNullFraction": 0.01},
        }
    )


def median_run(runs: list) -> Any:
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def run(quick: bool) -> dict[str, Any]:
    total = (128 << 20) if quick else (1 << 30)
    runs = []
    for data_format in ("csv", "parquet"):
        folder, files = generate(data_format, total // 2)
        size = sum(f.stat().st_size for f in files)
        termination = WORK / f"termination-{data_format}.json"
        env = clean_env(
            FLYWHEEL_DATASET_SPEC=spec(folder, data_format),
            FLYWHEEL_PROFILE_URI=(WORK / f"profile-{data_format}.json").as_uri(),
            FLYWHEEL_TERMINATION_LOG=str(termination),
        )
        ours, theirs = [], []
        for _ in range(1 + WARM_RUNS):  # the first of each warms the page cache
            ours.append(measure([str(VENV_BIN / "flywheel"), "dataset-snapshot"], env))
            if ours[-1].returncode != 0:
                raise RuntimeError(f"flywheel dataset-snapshot failed:\n{ours[-1].output[-3000:]}")
            theirs.append(measure(["sha256sum", *map(str, files)]))
            if theirs[-1].returncode != 0:
                raise RuntimeError(f"sha256sum failed:\n{theirs[-1].output[-3000:]}")
        result = json.loads(termination.read_text())
        if not result.get("validation", {}).get("passed"):
            raise RuntimeError(f"the bench data failed validation: {result.get('validation')}")
        ours_run, theirs_run = median_run(ours[1:]), median_run(theirs[1:])
        ours_s, theirs_s = ours_run.seconds, theirs_run.seconds
        row = {
            "format": data_format,
            "bytes": size,
            "files": len(files),
            "rows": result["rows"],
            "flywheel_seconds": ours_s,
            "flywheel_cold_seconds": ours[0].seconds,
            "flywheel_warm_seconds": [r.seconds for r in ours[1:]],
            "flywheel_cpu_seconds": ours_run.cpu_seconds,
            "flywheel_peak_rss_mib": max(r.peak_rss_mib for r in ours),
            "sha256sum_seconds": theirs_s,
            "sha256sum_cold_seconds": theirs[0].seconds,
            "sha256sum_warm_seconds": [r.seconds for r in theirs[1:]],
            "flywheel_mib_s": size / 2**20 / ours_s,
            "sha256sum_mib_s": size / 2**20 / theirs_s,
            "ratio": ratio(theirs_s, ours_s),
        }
        log(
            f"snapshot: {data_format} {size / 2**20:.0f} MiB: flywheel {ours_s:.2f} s "
            f"({row['flywheel_mib_s']:.0f} MiB/s), sha256sum {theirs_s:.2f} s "
            f"({row['sha256sum_mib_s']:.0f} MiB/s)"
        )
        runs.append(row)
    ours_total = sum(r["flywheel_seconds"] for r in runs)
    theirs_total = sum(r["sha256sum_seconds"] for r in runs)
    goals = [
        goal(
            "snapshot",
            f"{r['format']}: throughput flywheel ÷ sha256sum",
            r["ratio"],
            0.7,
        )
        for r in runs
    ]
    goals.append(
        goal(
            "snapshot",
            "both formats (1 GiB): throughput flywheel ÷ sha256sum",
            ratio(theirs_total, ours_total),
            0.7,
        )
    )
    return {
        "setup": {
            "bytes": sum(r["bytes"] for r in runs),
            "files_per_format": FILES,
            "figure": f"median of {WARM_RUNS} warm runs of each side, after one warming the cache",
            "pinned": "no: pyarrow may use both cores, sha256sum uses one",
        },
        "runs": runs,
        "goals": goals,
    }
