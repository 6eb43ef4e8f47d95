"""Cluster fixtures: a real apiserver for the tests marked `integration`.

FLYWHEEL_KUBECONFIG=<path> points the tests at an existing cluster instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "cluster"))
import controlplane  # noqa: E402

# The object store and mlflow server fixtures (tests/services/fixtures.py).
pytest_plugins = ["services.fixtures", "cluster.runner_fixture"]

CLUSTER_FIXTURES = {"control_plane", "kube_api", "namespace"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that needs the cluster is an integration test, whatever its folder.
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@dataclass
class ExistingCluster:
    """A cluster this test session did not start and must not stop."""

    kubeconfig: Path

    def kubectl(self, *args: str, check: bool = True, input: str | None = None):
        built = controlplane.ControlPlane().bin_dir / "kubectl"  # else kubectl from PATH
        kubectl = str(built) if built.exists() else ""
        return controlplane.run_kubectl(
            self.kubeconfig, *args, check=check, input=input, kubectl=kubectl
        )


@contextlib.contextmanager
def kubeconfig_exported(path: Path):
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous


@pytest.fixture(autouse=True)
def _fresh_mlflow_state():
    """MLflow keeps a process-wide active experiment (and run). Tests that log
    in-process (model fixtures, the drift check run as a function) would leak
    it into the next test, where resuming a run by id under another experiment
    fails. Every test ends with none. (The tracking URI is left alone: module
    fixtures set it for all their tests.)"""
    yield
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is not None:
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()
        fluent._active_experiment_id = None
    for variable in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        os.environ.pop(variable, None)


@pytest.fixture(scope="session")
def control_plane():
    external = os.environ.get("FLYWHEEL_KUBECONFIG")
    if external:
        cluster = ExistingCluster(Path(external))
        with kubeconfig_exported(cluster.kubeconfig):
            yield cluster
        return
    cluster = controlplane.ControlPlane()
    # The claim tells a concurrent test session not to stop the cluster under us.
    with cluster.claimed():
        ours = not cluster.is_running()  # one someone started (make cluster-up) stays up
        if ours:
            cluster.start()
        with kubeconfig_exported(cluster.kubeconfig):
            yield cluster
    if ours:
        cluster.stop_unless_claimed()


@pytest.fixture(scope="session")
def kube_api(control_plane):
    from kubernetes import config

    with config.new_client_from_config(config_file=str(control_plane.kubeconfig)) as api:
        yield api


@pytest.fixture
def namespace(kube_api):
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    name = f"t-{secrets.token_hex(4)}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    meta = client.V1ObjectMeta(name=name, labels=labels)
    core.create_namespace(client.V1Namespace(metadata=meta))
    yield name
    # Deletion finishes in the background; nothing later depends on it.
    core.delete_namespace(name, propagation_policy="Background")
