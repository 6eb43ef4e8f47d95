"""Fixtures for tests that need the CRDs installed or the operator running."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kube_helpers import Objects
from kubernetes import client
from operator_helpers import ARTIFACT_BUCKET, OperatorProcess, operator_env, operator_process
from sample_data import upload_sample_data
from training_helpers import iris_dataset, wait_dataset_ready

ROOT = Path(__file__).resolve().parents[2]
# Where the operator's log stood when a test began (its failure report shows
# what the operator logged during the test: a flake seen once in CI left
# nothing else to go on).
_LOG_AT_START = pytest.StashKey[int]()
_LOG_CHARS_SHOWN = 30_000


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    running = getattr(item, "funcargs", {}).get("operator")
    if isinstance(running, OperatorProcess):
        item.stash[_LOG_AT_START] = running.log_size()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    running = getattr(item, "funcargs", {}).get("operator")
    if report.when == "call" and report.failed and isinstance(running, OperatorProcess):
        logged = running.log_text(item.stash.get(_LOG_AT_START, 0))
        shown = logged[-_LOG_CHARS_SHOWN:]
        cut = f"(the last {len(shown)} of {len(logged)} characters)\n" if shown != logged else ""
        report.sections.append(("operator log during the test", cut + shown))


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


@pytest.fixture(scope="session")
def operator(control_plane, crds, object_store, mlflow_server, pod_runner, tmp_path_factory):
    """`flywheel run` as a real process against the control plane, with the
    object store as its artifact store; the pods it creates run on the
    pod-runner node."""
    object_store.make_bucket(ARTIFACT_BUCKET)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    running = operator_process(operator_env(control_plane, object_store, mlflow_server), log)
    running.start(timeout=60)
    yield running
    running.stop()


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
