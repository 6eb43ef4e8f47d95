#!/usr/bin/env python3
"""Start and stop a real MLflow tracking and registry server for the tests and the demo.

    python tests/services/mlflowserver.py up|down|status|env

`up` brings up the object store first (objectstore.py; reused when it already
runs), makes the bucket `flywheel-mlflow`, then runs `mlflow server` from this
Python environment on a free 127.0.0.1 port with

  - a SQLite backend (runs, metrics, the model registry) in
    <repo>/.cache/services/mlflow/mlflow.db, and
  - proxied artifacts: clients send artifacts to the server
    (`mlflow-artifacts:/...`), which writes them to
    s3://flywheel-mlflow/artifacts in the object store. A client needs only
    MLFLOW_TRACKING_URI; no S3 keys leave the server.

`up` prints shell exports (`eval "$(python tests/services/mlflowserver.py up)"`);
`down` stops the server and drops its database (the object store keeps running).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import (  # noqa: E402
    HOST,
    REPO,
    Daemon,
    StartupError,
    clean_env,
    free_port,
    http_status,
    log,
    services_dir,
    shell_exports,
)
from objectstore import ObjectStore  # noqa: E402

NAME = "mlflow"
BUCKET = "flywheel-mlflow"
UP_TIMEOUT = 120.0  # the first start creates the database schema: tens of migrations


def _python_with_mlflow() -> str:
    try:
        import boto3  # noqa: F401
        import mlflow  # noqa: F401
    except ImportError:
        raise StartupError("mlflow and boto3 are not installed here; run `make install`") from None
    return sys.executable


def _in_project_venv(argv: list[str]) -> None:
    """Run the CLI again with the project's venv when this Python lacks mlflow."""
    venv = REPO / ".venv" / "bin" / "python"
    try:
        import mlflow  # noqa: F401
    except ImportError:
        if venv.exists() and Path(sys.executable) != venv:
            os.execv(venv, [str(venv), str(Path(__file__).resolve()), *argv])


class MlflowServer:
    """The runner, and what the `mlflow_server` fixture hands to tests."""

    def __init__(self, store: ObjectStore | None = None, state_dir: Path | None = None):
        self.store = store or ObjectStore()
        self.state_dir = Path(state_dir or services_dir() / NAME).resolve()
        self.db = self.state_dir / "mlflow.db"
        self.daemon = Daemon(NAME, self.state_dir)
        self.bucket = BUCKET
        self.artifacts_destination = f"s3://{BUCKET}/artifacts"

    # ------------------------------------------------------ connection info
    @property
    def port(self) -> int | None:
        return self.daemon.read_state().get("port")

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def s3_env(self) -> dict[str, str]:
        """What a client needs for direct S3 access to the artifact bucket (the
        server's own settings). Clients of the proxy need none of it."""
        store = self.store.env()
        keys = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        return {key: store[key] for key in (*keys, "AWS_DEFAULT_REGION")}

    @property
    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, **self.s3_env}

    def client(self):
        """An `mlflow.MlflowClient` for tracking and the registry on this server."""
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # ------------------------------------------------------------ lifecycle
    def is_running(self) -> bool:
        """Up, healthy, and writing to the object store that runs now (the store
        may have been restarted on another port since this server started)."""
        if self.daemon.pid() is None or http_status(self.tracking_uri + "/health") != 200:
            return False
        return self.store.is_running() and (
            self.daemon.read_state().get("s3_endpoint") == self.store.endpoint_url
        )

    def start(self) -> MlflowServer:
        """Bring the object store and the server up (or find them up); returns self."""
        self.store.start()
        self.store.make_bucket(self.bucket)  # also when a restarted store lost it
        if self.is_running():
            log(NAME, f"already running at {self.tracking_uri}")
            return self
        self.stop()
        state = self.daemon.read_state()
        state["port"] = free_port(state.get("port"))
        state["s3_endpoint"] = self.store.endpoint_url
        workers = os.environ.get("FLYWHEEL_MLFLOW_WORKERS", "1")  # 2 cores: one is enough
        state["argv"] = [
            _python_with_mlflow(), "-m", "mlflow", "server",
            "--host", HOST, "--port", str(state["port"]), "--workers", workers,
            "--backend-store-uri", f"sqlite:///{self.db}",
            "--serve-artifacts", "--artifacts-destination", self.artifacts_destination,
        ]  # fmt: skip
        env = self._server_env()
        self.daemon.write_state(state)
        self.daemon.spawn(state["argv"], env, cwd=self.state_dir)
        took = self.daemon.wait_ready(
            lambda: http_status(self.tracking_uri + "/health") == 200, UP_TIMEOUT
        )
        log(NAME, f"up in {took:.1f}s at {self.tracking_uri} ({self.state_dir})")
        return self

    def _server_env(self) -> dict[str, str]:
        return clean_env({
            **self.s3_env,
            # The server's boto3 reads no developer's ~/.aws files.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            # No phoning home (there is no network here anyway: it would only wait).
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            # The background job runner (for GenAI judges) is not used: save its processes.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        })  # fmt: skip

    @contextlib.contextmanager
    def outage(self):
        """The server stopped (connections refused) for the `with` block, then
        started again on the same port with the same database: an outage."""
        state = self.daemon.read_state()
        self.daemon.stop()
        try:
            yield
        finally:
            self.daemon.spawn(state["argv"], self._server_env(), cwd=self.state_dir)
            self.daemon.wait_ready(
                lambda: http_status(self.tracking_uri + "/health") == 200, UP_TIMEOUT
            )

    def stop(self) -> None:
        """Stop the server (its whole process group) and drop the database."""
        self.daemon.stop()
        self.db.unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "mlartifacts", ignore_errors=True)


def main(argv: list[str]) -> int:
    verbs = ("up", "down", "status", "env")
    if len(argv) != 1 or argv[0] not in verbs:
        print(f"usage: {Path(__file__).name} {{{'|'.join(verbs)}}}", file=sys.stderr)
        return 2
    _in_project_venv(argv)
    server = MlflowServer()
    verb = argv[0]
    if verb == "up":
        begin = time.monotonic()
        try:
            server.start()
        except (StartupError, subprocess.CalledProcessError) as err:
            log(NAME, f"failed: {err}")
            return 1
        log(NAME, f"`up` took {time.monotonic() - begin:.1f}s")
        print(shell_exports(server.env))
    elif verb == "down":
        server.stop()
    elif verb == "status":
        pid = server.daemon.pid()
        if pid and server.is_running():
            print(f"{NAME}: running (pid {pid}) at {server.tracking_uri}")
            where = f"{server.artifacts_destination} at {server.store.endpoint_url}"
            print(f"{NAME}: artifacts go to {where}")
            return 0
        if pid:
            print(f"{NAME}: running (pid {pid}) but its object store is gone; `up` restarts it")
        else:
            print(f"{NAME}: stopped")
        return 3
    else:
        if not server.is_running():
            log(NAME, "not running; start it with `up`")
            return 3
        print(shell_exports(server.env))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
