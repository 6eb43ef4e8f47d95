"""Run the benchmarks: flywheel against the real alternatives, on this
machine, in this run; every headline figure a ratio.

    .venv/bin/python tests/bench/run.py            # full (about 35 minutes)
    .venv/bin/python tests/bench/run.py --quick    # a smoke run (a few minutes)
    .venv/bin/python tests/bench/run.py --only serving,snapshot

Writes tests/bench/results.json (figures, versions, machine) and
tests/bench/results.md (the markdown tables, also printed). Benchmarks are
not tests: nothing here fails on a figure, only on a broken run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import render_markdown  # noqa: E402
from common import BENCH, CACHE, REPO, log, machine, tool_version, versions  # noqa: E402

# The longest last: a run cut short still has the others (saved after each).
BENCHMARKS = ("serving", "snapshot", "operator_scale", "drift")
PROJECT_PACKAGES = [
    "flywheel-operator",
    "mlflow",
    "evidently",
    "scikit-learn",
    "skops",
    "pandas",
    "numpy",
    "pyarrow",
    "scipy",
    "uvicorn",
    "uvloop",
    "httptools",
    "orjson",
    "fastapi",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other benchmarks' results already in --results (re-run some only)",
    )
    parser.add_argument("--results", default=str(BENCH / "results.json"))
    parser.add_argument("--markdown", default=str(BENCH / "results.md"))
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    CACHE.mkdir(parents=True, exist_ok=True)

    results: dict = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "versions": {
            **versions(PROJECT_PACKAGES),
            "sha256sum": tool_version(["sha256sum", "--version"]),
            "kube-apiserver": tool_version([str(REPO / ".cache/bin/kube-apiserver"), "--version"]),
        },
        "goals": [],
        "load_average": {},
        "seconds": {},
    }
    if args.merge and Path(args.results).exists():
        previous = json.loads(Path(args.results).read_text())
        for name in BENCHMARKS:
            if name not in chosen and name in previous:
                results[name] = previous[name]
                for key in ("seconds", "load_average"):
                    if name in previous.get(key, {}):
                        results[key][name] = previous[key][name]
        kept = {k: v for k, v in previous.get("versions", {}).items() if k.startswith("mlserver")}
        if "serving" not in chosen:
            results["versions"].update(kept)
        results["merged"] = {"kept": [n for n in BENCHMARKS if n in results and n not in chosen]}
    failed = False
    for name in chosen:
        log(f"{name}: starting ({results['mode']})")
        started = time.monotonic()
        before = os.getloadavg()
        try:
            module = __import__(name)
            outcome = module.run(args.quick)
        except Exception:
            failed = True
            log(f"{name}: failed\n{traceback.format_exc()}")
            results[name] = {"error": traceback.format_exc(limit=5)}
            continue
        finally:
            results["seconds"][name] = round(time.monotonic() - started, 1)
            results["load_average"][name] = {"before": before, "after": os.getloadavg()}
        if name == "serving":
            results["versions"].update(
                {f"mlserver-venv:{k}": v for k, v in outcome.pop("versions", {}).items()}
            )
        results[name] = outcome
        log(f"{name}: done in {results['seconds'][name]:.0f} s")
        save(results, args)

    markdown = save(results, args)
    print(markdown)
    log(f"wrote {args.results} and {args.markdown}")
    return 1 if failed else 0


def save(results: dict, args: argparse.Namespace) -> str:
    """Write results.json and results.md as they stand (after every benchmark)."""
    results["goals"] = [g for n in BENCHMARKS for g in results.get(n, {}).get("goals", [])]
    Path(args.results).write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    markdown = render_markdown(results)
    Path(args.markdown).write_text(markdown)
    return markdown


if __name__ == "__main__":
    sys.exit(main())
