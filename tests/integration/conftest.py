"""Fixtures for tests that need the CRDs installed or the operator running."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from kube_helpers import RESYNC_SECONDS, Objects, free_port, wait_for
from kubernetes import client
from sample_data import upload_sample_data
from training_helpers import iris_dataset, wait_dataset_ready

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def crds(control_plane):
    """The generated CRDs, installed and Established."""
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    control_plane.kubectl(
        "wait", "--for", "condition=Established", "--timeout=60s", "-f", str(ROOT / "crds")
    )
    return ROOT / "crds"


@pytest.fixture(scope="session")
def objects(kube_api, crds) -> Objects:
    return Objects(client.CustomObjectsApi(kube_api))


@dataclass
class OperatorProcess:
    process: subprocess.Popen
    log: Path
    metrics_url: str
    liveness_url: str

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


ARTIFACT_BUCKET = "flywheel-artifacts"


@pytest.fixture(scope="session")
def operator(control_plane, crds, object_store, mlflow_server, pod_runner, tmp_path_factory):
    """`flywheel run` as a real process against the control plane, with the
    object store as its artifact store; the pods it creates run on the
    pod-runner node."""
    object_store.make_bucket(ARTIFACT_BUCKET)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    metrics_port, liveness_port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig),
        "FLYWHEEL_RESYNC_SECONDS": str(RESYNC_SECONDS),
        "FLYWHEEL_IMAGE": "flywheel:dev",
        "FLYWHEEL_S3_ENDPOINT": object_store.endpoint_url,
        "FLYWHEEL_ARTIFACT_ROOT": f"s3://{ARTIFACT_BUCKET}",
        "FLYWHEEL_ARTIFACT_SECRET": "flywheel-artifacts",
        "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
    }
    command = [
        sys.executable, "-m", "flywheel.cli", "run",
        "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port),
        "--liveness", f"http://127.0.0.1:{liveness_port}/healthz",
        "--log-format", "json",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    running = OperatorProcess(
        process,
        log,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        liveness_url=f"http://127.0.0.1:{liveness_port}/healthz",
    )

    def healthy():
        if process.poll() is not None:
            pytest.fail(f"operator exited with {process.returncode}:\n{running.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(running.liveness_url, timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    wait_for(healthy, timeout=60, what="the operator's liveness endpoint")
    yield running
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the operator did not stop within 20 s of SIGTERM")


@pytest.fixture
def artifact_secret(kube_api, namespace, object_store):
    """The Secret the operator's workloads use for the artifact store."""
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="flywheel-artifacts"),
        string_data={
            "AWS_ACCESS_KEY_ID": object_store.access_key,
            "AWS_SECRET_ACCESS_KEY": object_store.secret_key,
        },
    )
    client.CoreV1Api(kube_api).create_namespaced_secret(namespace, secret)
    return "flywheel-artifacts"


@pytest.fixture
def iris(operator, objects, namespace, object_store, artifact_secret):
    """Dataset `iris` over the sample data, snapshotted and Ready; its status."""
    upload_sample_data(object_store)
    objects.create(namespace, iris_dataset())
    return wait_dataset_ready(objects, namespace)


@pytest.fixture(scope="session")
def gateway_api(control_plane):
    """The Gateway API's standard CRDs, from the pinned Go module."""
    crds = subprocess.run(
        ["bash", "tests/cluster/gateway_api.sh"], check=True, capture_output=True, text=True
    ).stdout.strip()
    control_plane.kubectl("apply", "--server-side", "-f", crds)
    control_plane.kubectl("wait", "--for", "condition=Established", "--timeout=60s", "-f", crds)
    return crds
