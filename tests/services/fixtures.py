"""Pytest fixtures for the real object store and MLflow server, loaded as a plugin
(tests/conftest.py: `pytest_plugins = ["services.fixtures"]`).

Each session fixture reuses an instance a developer started with the CLI
(`python tests/services/objectstore.py up`, `... mlflowserver.py up`) and leaves
it running; otherwise it starts one and stops it when the session ends.
A test that uses either fixture is marked `integration`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mlflowserver  # noqa: E402
import objectstore  # noqa: E402

# MLflow clients in this process must not try to send usage data (no network here).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SERVICE_FIXTURES = {"object_store", "mlflow_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def object_store():
    """The S3-compatible store: `endpoint_url`, `access_key`, `secret_key`, `region`,
    `env()`, `client()` (boto3) and `make_bucket(name)`."""
    store = objectstore.ObjectStore()
    ours = not store.is_running()
    if ours:
        store.start()
    yield store
    if ours:  # one started with `objectstore.py up` stays up
        store.stop()


@pytest.fixture(scope="session")
def mlflow_server(object_store):
    """`mlflow server` with proxied artifacts in the object store: `tracking_uri`,
    `s3_env` (MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_DEFAULT_REGION), `env` (those plus MLFLOW_TRACKING_URI), `bucket`,
    `artifacts_destination` and `client()` (an mlflow.MlflowClient)."""
    server = mlflowserver.MlflowServer(store=object_store)
    ours = not server.is_running()
    server.start()  # when reused: still makes sure its bucket exists
    yield server
    if ours:  # one started with `mlflowserver.py up` stays up
        server.stop()
