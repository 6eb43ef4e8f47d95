"""Drift check: `flywheel drift-check` vs Evidently's data-drift preset run
plainly on the full pandas frames.

The data: a 100,000-row reference (Parquet) and, per scenario, 1,000,000
logged rows in flywheel's inference-log layout
(<root>/<version>/hour=YYYY-MM-DDTHH/*.parquet, with `_flywheel_time` etc.),
20 features: 12 float, 2 integer, 6 categorical (text). Ten seeded
scenarios, five shifted (over half of the features moved: means, scales,
category frequencies) and five not (no change, changes too small for the
tests, or large changes in fewer than half of the features).

Each side runs in its own process, timed from start to exit (imports
included), its peak memory the kernel's max RSS for it. The plain side reads
every log file and the reference with pandas, gives Evidently the same
numerical/categorical split, runs `Report([DataDriftPreset()])` and takes
the share of drifted columns (drift at >= 0.5, Evidently's default and
flywheel's). flywheel runs with its defaults (a 200,000-row seeded sample per
side) and also writes its HTML report and result.json; the plain side
writes no HTML. Both may use both cores; neither is pinned.

`python drift.py evidently CURRENT_ROOT REFERENCE OUT FEATURES_JSON` is the
plain side's process.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from bench_report import goal, ratio
from common import CACHE, VENV_BIN, clean_env, log, measure

WORK = CACHE / "drift"
FLOATS = [f"f{i:02d}" for i in range(12)]
INTS = ["count_a", "count_b"]
CATS = [f"c{i}" for i in range(6)]
FEATURES = FLOATS + INTS + CATS
NUMERIC = FLOATS + INTS
CATEGORIES = ["alpha", "beta", "gamma", "delta", "epsilon"]
BASE_PROBS = [0.35, 0.25, 0.2, 0.12, 0.08]
HOURS = ["2026-01-01T00", "2026-01-01T01", "2026-01-01T02", "2026-01-01T03"]
NOW = "2026-01-01T04:00:00Z"
WINDOW = "4h"
ROWS_PER_FILE = 20_000

# name, drift expected, {feature: change}; a change is ("shift", stds),
# ("scale", factor) or ("probs", [p...]).
REVERSED = list(reversed(BASE_PROBS))
SCENARIOS: list[tuple[str, bool, dict[str, tuple[str, Any]]]] = [
    ("mean +0.5 sd, 14 numeric", True, {f: ("shift", 0.5) for f in NUMERIC}),
    ("scale x1.6, 12 floats", True, {f: ("scale", 1.6) for f in FLOATS}),
    (
        "6 categories flipped + 6 means",
        True,
        {**{c: ("probs", REVERSED) for c in CATS}, **{f: ("shift", 0.4) for f in FLOATS[:6]}},
    ),
    (
        "all 20 moved a little (0.25 sd)",
        True,
        {
            **{f: ("shift", 0.25) for f in NUMERIC},
            **{c: ("probs", [0.2, 0.2, 0.2, 0.2, 0.2]) for c in CATS},
        },
    ),
    ("11 of 20 moved 1 sd", True, {f: ("shift", 1.0) for f in FLOATS[:11]}),
    ("no change", False, {}),
    ("all numeric +0.02 sd", False, {f: ("shift", 0.02) for f in NUMERIC}),
    ("5 of 20 moved 1 sd", False, {f: ("shift", 1.0) for f in FLOATS[:5]}),
    (
        "scale x1.03 + categories nudged",
        False,
        {
            **{f: ("scale", 1.03) for f in FLOATS},
            **{c: ("probs", [0.34, 0.25, 0.21, 0.12, 0.08]) for c in CATS},
        },
    ),
    ("9 of 20 moved 1 sd", False, {f: ("shift", 1.0) for f in FLOATS[:9]}),
]


# --- the data --------------------------------------------------------------------


def frame(rows: int, seed: int, changes: dict[str, tuple[str, Any]]):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i, name in enumerate(FLOATS):
        mean, sd = 10.0 * i, 1.0 + i / 4
        change = changes.get(name)
        if change and change[0] == "shift":
            mean += change[1] * sd
        if change and change[0] == "scale":
            sd *= change[1]
        columns[name] = rng.normal(mean, sd, rows)
    for i, name in enumerate(INTS):
        lam = 20.0 + 30 * i
        change = changes.get(name)
        if change and change[0] == "shift":
            lam += change[1] * lam**0.5
        columns[name] = rng.poisson(lam, rows).astype("int64")
    for name in CATS:
        change = changes.get(name)
        probs = change[1] if change and change[0] == "probs" else BASE_PROBS
        columns[name] = pd.Categorical.from_codes(
            rng.choice(len(CATEGORIES), rows, p=probs), CATEGORIES
        ).astype(str)
    return pd.DataFrame(columns)


def write_reference(rows: int) -> Path:
    path = WORK / "reference" / "reference.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame(rows, 12345, {}).to_parquet(path, index=False)
    return path


def write_current(root: Path, rows: int, seed: int, changes: dict) -> None:
    """The inference-log layout flywheel serve writes."""
    import numpy as np
    import pandas as pd

    data = frame(rows, seed, changes)
    rng = np.random.default_rng(seed + 1)
    start = pd.Timestamp(f"{HOURS[0]}:00:00", tz="UTC").value // 10**6
    times = np.sort(rng.integers(start, start + len(HOURS) * 3_600_000, rows))
    data["_flywheel_time"] = pd.to_datetime(times, unit="ms", utc=True)
    data["_flywheel_prediction"] = rng.choice(["0", "1"], rows)
    data["_flywheel_model_version"] = "bench-v1"
    hours = data["_flywheel_time"].dt.strftime("%Y-%m-%dT%H")
    for hour, part in data.groupby(hours, sort=True):
        folder = root / "bench-v1" / f"hour={hour}"
        folder.mkdir(parents=True, exist_ok=True)
        for n, offset in enumerate(range(0, len(part), ROWS_PER_FILE)):
            chunk = part.iloc[offset : offset + ROWS_PER_FILE]
            chunk.to_parquet(folder / f"bench-1-{n:06d}.parquet", index=False)


# --- the plain side (its own process) ---------------------------------------------------


def plain_evidently(current_root: str, reference: str, out: str, features: str) -> None:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    kinds = json.loads(features)
    files = sorted(Path(current_root).rglob("*.parquet"))
    current = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    current = current[[c for c in current.columns if not c.startswith("_flywheel_")]]
    ref = pd.read_parquet(reference)
    definition = DataDefinition(numerical_columns=kinds["num"], categorical_columns=kinds["cat"])
    report = Report([DataDriftPreset()])
    snapshot = report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    share = None
    for metric in snapshot.dict()["metrics"]:
        if "DriftedColumnsCount" in str(metric.get("metric_id", "")) or "DriftedColumnsCount" in (
            str(metric.get("config", {}).get("type", ""))
        ):
            share = metric["value"]["share"]
    if share is None:
        raise SystemExit("no DriftedColumnsCount in Evidently's snapshot")
    verdict = "Drift" if share >= 0.5 else "NoDrift"
    Path(out).write_text(json.dumps({"result": verdict, "share": share, "rows": len(current)}))


# --- the benchmark ----------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    current_rows, reference_rows = (100_000, 10_000) if quick else (1_000_000, 100_000)
    chosen = [SCENARIOS[0], SCENARIOS[5]] if quick else SCENARIOS
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    reference = write_reference(reference_rows)
    kinds = json.dumps({"num": NUMERIC, "cat": CATS})
    scenarios = []
    for seed, (name, expected, changes) in enumerate(chosen):
        root = WORK / "current"
        shutil.rmtree(root, ignore_errors=True)
        write_current(root, current_rows, 1000 + seed, changes)  # not timed
        report = WORK / "report"
        termination = WORK / "termination.json"
        env = clean_env(
            FLYWHEEL_REFERENCE_URI=reference.as_uri(),
            FLYWHEEL_REFERENCE_FORMAT="parquet",
            FLYWHEEL_CURRENT_URI=root.as_uri(),
            FLYWHEEL_WINDOW=WINDOW,
            FLYWHEEL_NOW=NOW,
            FLYWHEEL_REPORT_URI=report.as_uri(),
            FLYWHEEL_TERMINATION_LOG=str(termination),
        )
        ours = measure([str(VENV_BIN / "flywheel"), "drift-check"], env)
        if ours.returncode != 0:
            raise RuntimeError(f"flywheel drift-check failed:\n{ours.output[-3000:]}")
        ours_result = json.loads(termination.read_text())
        out = WORK / "evidently.json"
        theirs = measure(
            [sys.executable, __file__, "evidently", str(root), str(reference), str(out), kinds],
            clean_env(),
        )
        if theirs.returncode != 0:
            raise RuntimeError(f"plain Evidently failed:\n{theirs.output[-3000:]}")
        theirs_result = json.loads(out.read_text())
        row = {
            "name": name,
            "expected": "Drift" if expected else "NoDrift",
            "flywheel": {
                "verdict": ours_result["result"],
                "share": ours_result["share"],
                "seconds": ours.seconds,
                "cpu_seconds": ours.cpu_seconds,
                "peak_rss_mib": ours.peak_rss_mib,
                "sampled": ours_result.get("sampled"),
            },
            "evidently": {
                "verdict": theirs_result["result"],
                "share": theirs_result["share"],
                "seconds": theirs.seconds,
                "cpu_seconds": theirs.cpu_seconds,
                "peak_rss_mib": theirs.peak_rss_mib,
            },
        }
        log(
            f"drift: {name}: flywheel {row['flywheel']['verdict']} "
            f"({ours.seconds:.1f} s, {ours.peak_rss_mib:.0f} MiB), Evidently "
            f"{row['evidently']['verdict']} ({theirs.seconds:.1f} s, "
            f"{theirs.peak_rss_mib:.0f} MiB), expected {row['expected']}"
        )
        scenarios.append(row)
    return summarize(scenarios, current_rows, reference_rows)


def summarize(scenarios: list[dict], current_rows: int, reference_rows: int) -> dict[str, Any]:
    ours_seconds = sum(s["flywheel"]["seconds"] for s in scenarios)
    theirs_seconds = sum(s["evidently"]["seconds"] for s in scenarios)
    ours_peak = max(s["flywheel"]["peak_rss_mib"] for s in scenarios)
    theirs_peak = max(s["evidently"]["peak_rss_mib"] for s in scenarios)
    same = sum(s["flywheel"]["verdict"] == s["evidently"]["verdict"] for s in scenarios)
    right = sum(s["flywheel"]["verdict"] == s["expected"] for s in scenarios)
    goals = [
        goal(
            "drift",
            f"same verdict as plain Evidently ({len(scenarios)} scenarios)",
            same / len(scenarios),
            1.0,
            unit="%",
        ),
        goal(
            "drift",
            "speed: plain Evidently time ÷ flywheel time (all scenarios)",
            ratio(theirs_seconds, ours_seconds),
            5.0,
        ),
        goal(
            "drift",
            "peak memory: flywheel ÷ plain Evidently (highest of each)",
            ratio(ours_peak, theirs_peak),
            1 / 3,
            higher_is_better=False,
        ),
    ]
    return {
        "setup": {
            "current_rows": current_rows,
            "reference_rows": reference_rows,
            "features": {"float": len(FLOATS), "integer": len(INTS), "categorical": len(CATS)},
            "rows_per_log_file": ROWS_PER_FILE,
            "window": WINDOW,
            "pinned": "no: each side may use both cores",
        },
        "scenarios": scenarios,
        "flywheel_seconds": ours_seconds,
        "evidently_seconds": theirs_seconds,
        "flywheel_peak_rss_mib": ours_peak,
        "evidently_peak_rss_mib": theirs_peak,
        "verdicts_agree": same,
        "flywheel_verdicts_as_expected": right,
        "goals": goals,
    }


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "evidently":
    plain_evidently(*sys.argv[2:])
