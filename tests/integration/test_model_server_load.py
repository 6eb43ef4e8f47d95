"""`flywheel serve` (the real process, two workers, inference log on) under
sustained load from a second process on loopback: every request answered 200,
no connection error, and memory flat from the first minute to the last.

FLYWHEEL_LOAD_SECONDS sets the length (default 60 s; `make soak` runs 600 s).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from model_server_process import log_iris_classifier, rss_bytes, running, serve_env
from serving_helpers import iris_frame

pytestmark = pytest.mark.integration

SECONDS = float(os.environ.get("FLYWHEEL_LOAD_SECONDS", "60"))
CONCURRENCY = 8  # connections kept busy: more than the two workers can serve at once
ROWS = 10  # rows per request
CLIENT = Path(__file__).with_name("load_client.py")


@pytest.fixture
def model_uri(mlflow_server):
    return log_iris_classifier(mlflow_server, f"load-{secrets.token_hex(4)}")


def log_rows(metrics: dict, outcome: str) -> float:
    return sum(
        v for (name, labels), v in metrics.items()
        if name == "flywheel_serve_inference_log_rows_total" and ("outcome", outcome) in labels
    )  # fmt: skip


def wait_for_log(server, expected: int, timeout: float = 120) -> dict:
    """The server's metrics once every logged row is written or counted as
    dropped (the writer drains its backlog after the load), or at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = server.metrics()
        done = log_rows(metrics, "written") + log_rows(metrics, "dropped") >= expected
        if done or time.monotonic() > deadline:
            return metrics
        time.sleep(1)


def sample_rss(pid: int, stop: threading.Event, samples: list[int]) -> None:
    while not stop.wait(5):
        samples.append(rss_bytes(pid))


# The load itself, plus start-up, warm-up and draining the log (pytest's 600 s
# default would end `make soak`'s 600 s run before its load did).
@pytest.mark.timeout(SECONDS + 600)
def test_sustained_load_is_all_answered_with_flat_memory(model_uri, mlflow_server, tmp_path):
    env = serve_env(
        tmp_path, mlflow_server, model_uri,
        FLYWHEEL_INFERENCE_LOG_URI=(tmp_path / "inferences").as_uri(),
        FLYWHEEL_INFERENCE_LOG_FLUSH_SECONDS="5",
    )  # fmt: skip
    body = tmp_path / "body.json"
    rows = iris_frame()[0].sample(ROWS, random_state=0).to_numpy().tolist()
    body.write_text(json.dumps({"instances": rows}))
    with running(env, tmp_path) as server:
        # Warm both workers (first predictions allocate caches) before the baseline.
        warm = subprocess.run(
            [sys.executable, str(CLIENT), server.url, "10", str(CONCURRENCY), str(body)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert json.loads(warm.stdout)["codes"].keys() == {"200"}, warm.stdout
        samples = [rss_bytes(server.process.pid)]
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(server.process.pid, stop, samples))
        sampler.start()
        try:
            command = [sys.executable, str(CLIENT), server.url, str(SECONDS)]
            load = subprocess.run(
                [*command, str(CONCURRENCY), str(body)], capture_output=True, text=True, check=True
            )
        finally:
            stop.set()
            sampler.join()
        samples.append(rss_bytes(server.process.pid))
        assert server.process.poll() is None, server.output()
        # Every row is accounted for once the writer has caught up with the
        # load: written, or dropped and counted (never lost silently).
        answered = json.loads(warm.stdout)["requests"] + json.loads(load.stdout)["requests"]
        expected = ROWS * answered
        logged = wait_for_log(server, expected)

    result = json.loads(load.stdout)
    mib = [s >> 20 for s in samples]
    print(f"load: {result}; RSS MiB every 5 s: {mib}")
    assert result["errors"] == {}, result
    assert result["codes"] == {"200": result["requests"]}, result
    assert result["requests"] > 0
    # Flat: the last minute's peak is within 16 MiB of the first minute's.
    per_minute = max(1, len(samples) // max(1, int(SECONDS // 60)))
    first, last = max(samples[:per_minute]), max(samples[-per_minute:])
    assert last - first < 16 << 20, mib
    written, dropped = log_rows(logged, "written"), log_rows(logged, "dropped")
    print(f"inference log: {written:.0f} rows written, {dropped:.0f} dropped of {expected}")
    assert written + dropped == expected, (written, dropped, expected)
    assert written > 0
