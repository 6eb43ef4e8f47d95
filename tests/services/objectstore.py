#!/usr/bin/env python3
"""Start and stop a real S3-compatible object store for the tests and the demo.

    python tests/services/objectstore.py up|down|status|env

The server is versitygw (Apache-2.0) with its posix backend: each bucket is a
directory under <repo>/.cache/services/objectstore/data, each object a file.
It is built from the Go module pinned in tests/services/s3/go.mod by
build_s3.sh (a no-op once built), listens on a free 127.0.0.1 port, and checks
AWS Signature V4 against one root account whose keys are generated on the
first `up` and kept in state.json (mode 0600), so they stay valid across
restarts. Its built-in IAM store is on, so an unknown key is refused as by AWS
(403 InvalidAccessKeyId).

`up` prints shell exports (`eval "$(python tests/services/objectstore.py up)"`);
`down` stops it and drops the data: it is a throwaway store, like the test etcd.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import string
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import (  # noqa: E402
    HOST,
    Daemon,
    StartupError,
    cache_dir,
    clean_env,
    free_port,
    http_status,
    log,
    services_dir,
    shell_exports,
)

HERE = Path(__file__).resolve().parent
NAME = "objectstore"
REGION = "us-east-1"
UP_TIMEOUT = 30.0


def _new_access_key() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "FW" + "".join(secrets.choice(alphabet) for _ in range(18))


class ObjectStore:
    """The runner, and what the `object_store` fixture hands to tests."""

    def __init__(self, state_dir: Path | None = None, bin_dir: Path | None = None):
        self.state_dir = Path(state_dir or services_dir() / NAME).resolve()
        self.binary = Path(bin_dir or cache_dir() / "bin").resolve() / "versitygw"
        self.data_dir = self.state_dir / "data"
        self.iam_dir = self.state_dir / "iam"
        self.daemon = Daemon(NAME, self.state_dir)
        self.region = REGION

    # ------------------------------------------------------ connection info
    @property
    def _state(self) -> dict:
        return self.daemon.read_state()

    @property
    def port(self) -> int | None:
        return self._state.get("port")

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def access_key(self) -> str:
        return self._state["access_key"]

    @property
    def secret_key(self) -> str:
        return self._state["secret_key"]

    def env(self) -> dict[str, str]:
        """What an S3 client (boto3, the AWS CLI, MLflow) needs to reach this store."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        """A boto3 S3 client for this store (other keys only to test refusals)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def make_bucket(self, name: str) -> str:
        """Create bucket `name` unless this account already has it; return the name."""
        s3 = self.client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)
        return name

    # ------------------------------------------------------------ lifecycle
    def is_running(self) -> bool:
        return self.daemon.pid() is not None and self._answers()

    def build(self) -> None:
        # build_s3.sh prints progress; keep our stdout for the connection info.
        subprocess.run(["bash", str(HERE / "build_s3.sh")], check=True, stdout=sys.stderr)

    def start(self) -> ObjectStore:
        """Bring the store up (or find it up); returns self."""
        if self.is_running():
            log(NAME, f"already running at {self.endpoint_url}")
            return self
        self.build()
        self.stop()  # whatever is left of an earlier one, start clean
        state = self._state
        state.setdefault("access_key", _new_access_key())
        state.setdefault("secret_key", secrets.token_urlsafe(30))
        state["port"] = free_port(state.get("port"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.iam_dir.mkdir(parents=True, exist_ok=True)
        state["argv"] = [
            str(self.binary),
            f"--port={HOST}:{state['port']}",
            f"--region={self.region}",
            # The internal IAM store makes unknown keys a 403 InvalidAccessKeyId.
            f"--iam-dir={self.iam_dir}",
            "--quiet",  # no per-request lines in the log
            "posix",
            str(self.data_dir),
        ]
        self.daemon.write_state(state)
        self.daemon.spawn(state["argv"], self._server_env(), cwd=self.state_dir)
        took = self.daemon.wait_ready(self._answers, UP_TIMEOUT)
        log(NAME, f"up in {took:.2f}s at {self.endpoint_url} ({self.state_dir})")
        return self

    def _server_env(self) -> dict[str, str]:
        # Keys go in through the environment, never the command line (`ps` shows that).
        # Its flags also read VGW_* and ROOT_* variables: none of the caller's apply.
        state = self._state
        keys = {
            "ROOT_ACCESS_KEY_ID": state["access_key"],
            "ROOT_SECRET_ACCESS_KEY": state["secret_key"],
        }
        return clean_env(keys, drop=("VGW_", "ROOT_ACCESS_KEY", "ROOT_SECRET"))

    @contextlib.contextmanager
    def outage(self):
        """The store stopped (connections refused) for the `with` block, then
        started again on the same port with the same buckets: an outage."""
        state = self._state
        self.daemon.stop()
        try:
            yield
        finally:
            self.daemon.spawn(state["argv"], self._server_env(), cwd=self.state_dir)
            self.daemon.wait_ready(self._answers, UP_TIMEOUT)

    def stop(self) -> None:
        """Stop the server and drop its buckets; the keys stay for the next `up`."""
        self.daemon.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.iam_dir, ignore_errors=True)

    def _answers(self) -> bool:
        """Any S3 answer counts (anonymous requests get 403 AccessDenied)."""
        return bool(self.port) and http_status(self.endpoint_url + "/") is not None


def main(argv: list[str]) -> int:
    verbs = ("up", "down", "status", "env")
    if len(argv) != 1 or argv[0] not in verbs:
        print(f"usage: {Path(__file__).name} {{{'|'.join(verbs)}}}", file=sys.stderr)
        return 2
    store = ObjectStore()
    verb = argv[0]
    if verb == "up":
        begin = time.monotonic()
        try:
            store.start()
        except (StartupError, subprocess.CalledProcessError) as err:
            log(NAME, f"failed: {err}")
            return 1
        log(NAME, f"`up` took {time.monotonic() - begin:.2f}s")
        print(shell_exports(store.env()))
    elif verb == "down":
        store.stop()
    elif verb == "status":
        pid = store.daemon.pid()
        if pid and store.is_running():
            print(f"{NAME}: running (pid {pid}) at {store.endpoint_url}, data {store.data_dir}")
            return 0
        print(f"{NAME}: stopped")
        return 3
    else:
        if not store.is_running():
            log(NAME, "not running; start it with `up`")
            return 3
        print(shell_exports(store.env()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
