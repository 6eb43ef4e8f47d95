"""`flywheel serve` as a real process (the installed entry point), driven over
HTTP only: what the model-server tests share."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from kube_helpers import free_port, wait_for
from mlflow.models import infer_signature
from prometheus_client.parser import text_string_to_metric_families
from serving_helpers import iris_frame
from sklearn.linear_model import LogisticRegression

FLYWHEEL = Path(sys.executable).with_name("flywheel")  # the installed entry point
START_SECONDS = 180  # two workers importing MLflow on a small, shared machine


def log_iris_classifier(mlflow_server, experiment: str) -> str:
    """An iris logistic regression with its signature, logged to the real MLflow
    server in `experiment`; its model URI, for FLYWHEEL_MODEL_URI."""
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_experiment(experiment)
    x, y = iris_frame()
    model = LogisticRegression(max_iter=1000).fit(x, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="iris", signature=infer_signature(x, model.predict(x))
        )
    mlflow.set_tracking_uri(None)
    return info.model_uri


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path
    termination: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, parse(answer.read(), answer.headers)
        except urllib.error.HTTPError as error:
            return error.code, parse(error.read(), error.headers)

    def status(self, path: str) -> int | None:
        try:
            return self.call("GET", path)[0]
        except OSError:
            return None  # not listening yet

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        _, text = self.call("GET", "/metrics")
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def wait_ready(self) -> None:
        def ready():
            if self.process.poll() is not None:
                pytest.fail(f"flywheel serve exited {self.process.returncode}:\n{self.output()}")
            return self.status("/v2/health/ready") == 200

        wait_for(ready, timeout=START_SECONDS, every=0.5, what="the model server to be ready")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"flywheel serve did not stop within 40 s of SIGTERM:\n{self.output()}")


def parse(raw: bytes, headers) -> object:
    if headers.get("Content-Type", "").startswith("application/json"):
        return json.loads(raw)
    return raw.decode()


def serve_env(tmp_path: Path, mlflow_server, model_uri: str | None, **extra: str) -> dict:
    """The Deployment's environment: MLflow's address, the model, the labels."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
        "FLYWHEEL_MODEL_NAME": "iris",
        "FLYWHEEL_MODEL_VERSION": "iris-v1",
        "FLYWHEEL_TRACK": "canary",
        "FLYWHEEL_PORT": str(free_port()),
        "FLYWHEEL_BIND_ADDRESS": "127.0.0.1",
        "FLYWHEEL_WORKERS": "2",
        "FLYWHEEL_TERMINATION_LOG": str(tmp_path / "termination-log"),
        **extra,
    }
    if model_uri:
        env["FLYWHEEL_MODEL_URI"] = model_uri
    return env


@contextlib.contextmanager
def running(env: dict, tmp_path: Path, wait: bool = True):
    log = tmp_path / f"serve-{env['FLYWHEEL_PORT']}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(FLYWHEEL), "serve"], env=env, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT
        )
    server = Server(
        process,
        f"http://127.0.0.1:{env['FLYWHEEL_PORT']}",
        log,
        Path(env["FLYWHEEL_TERMINATION_LOG"]),
    )
    try:
        if wait:
            server.wait_ready()
        yield server
    finally:
        server.stop()


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (the server's workers)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        proc = Path(f"/proc/{current}")
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        for task in (proc / "task").iterdir():
            pending += [int(child) for child in (task / "children").read_text().split()]
    return total
