"""`flywheel run` as a child process the tests start, kill and start again."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from kube_helpers import RESYNC_SECONDS, free_port, wait_for


@dataclass
class OperatorProcess:
    """`flywheel run` as a child process that a test can also kill and start
    again (the chaos tests): `process` is always the newest one."""

    command: list[str]
    env: dict[str, str]
    log: Path
    metrics_url: str
    liveness_url: str
    process: subprocess.Popen | None = None

    def log_text(self, since: int = 0) -> str:
        """The log from byte `since` on (a test reads only what it caused:
        the session's operator also logs other tests' outages and restarts)."""
        with self.log.open("rb") as handle:
            handle.seek(since)
            return handle.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def start(self, timeout: float = 120) -> None:
        """Start it (appending to the one log) and wait for its liveness endpoint."""
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=sink, stderr=subprocess.STDOUT
            )
        wait_for(self.healthy, timeout=timeout, what="the operator's liveness endpoint")

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(
                f"operator exited with {self.process.returncode}:\n{self.log_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(self.liveness_url, timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed, as when a node dies."""
        self.process.kill()
        self.process.wait()

    def stop(self, grace: float = 20) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the operator did not stop within {grace:.0f} s of SIGTERM")


ARTIFACT_BUCKET = "flywheel-artifacts"


def operator_env(control_plane, object_store, mlflow_server, resync: float = RESYNC_SECONDS):
    return {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig),
        "FLYWHEEL_RESYNC_SECONDS": str(resync),
        "FLYWHEEL_IMAGE": "flywheel:dev",
        "FLYWHEEL_S3_ENDPOINT": object_store.endpoint_url,
        "FLYWHEEL_ARTIFACT_ROOT": f"s3://{ARTIFACT_BUCKET}",
        "FLYWHEEL_ARTIFACT_SECRET": "flywheel-artifacts",
        "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
    }


def operator_process(env: dict[str, str], log: Path, *namespaces: str) -> OperatorProcess:
    """An operator, not yet started; all namespaces unless some are named."""
    metrics_port, liveness_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "flywheel.cli", "run",
        *(f"--namespace={n}" for n in namespaces),
        "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port),
        "--liveness", f"http://127.0.0.1:{liveness_port}/healthz",
        "--log-format", "json",
    ]  # fmt: skip
    return OperatorProcess(
        command,
        env,
        log,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        liveness_url=f"http://127.0.0.1:{liveness_port}/healthz",
    )
