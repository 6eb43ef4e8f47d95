#!/usr/bin/env python3
"""The whole loop on a real single-node Kubernetes, every workload in a container.

    python tests/node/e2e.py [--keep]        # what `make e2e` runs (via test_e2e.py)

Up: the node (tests/node/node.py), the flywheel image (build_image.sh, built
while the node starts, then imported into the node's containerd), MLflow and
the object store, the chart (`helm install`, image pulled IfNotPresent) into a
namespace that enforces Pod Security `restricted`, and the demo's samples in
another such namespace. Then `flywheel demo`'s story runs, timed, with the
traffic sent through the InferenceService's Service; the end state is checked
(e2e_checks.py), and a TrainingRun whose container exits 3 must say so. Down:
always, even after a failure, after keeping every pod's log and the objects'
state in .cache/node/e2e/.

MLflow and the S3 server run as host processes (tests/services), bound to the
node's InternalIP, not as pods: they are the test's fixtures, not the product
(the chart does not ship them; a user brings their own), the same runners
`make test` uses, already built and cached, and they outlive the cluster, so
after a failure their data (runs, registry, inference logs, reports) are
still there to read. Pods reach them as any pod reaches its node's address.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("FLYWHEEL_CACHE") or REPO / ".cache").resolve()
WORK = CACHE / "node" / "e2e"
BIN = CACHE / "bin"
sys.path[:0] = [str(HERE), str(REPO / "tests" / "integration")]

from e2e_loop import Loop, Timeline  # noqa: E402

from node import NODE_LABELS  # noqa: E402

SYSTEM_NS, NS, RELEASE = "flywheel-system", "flywheel-e2e", "flywheel"
ARTIFACTS_BUCKET, SECRET = "flywheel-artifacts", "flywheel-artifacts"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


class E2EError(RuntimeError):
    """A step of the setup failed; the message names the log to read."""


def run(argv: list[str], log: str, env: dict[str, str] | None = None, timeout: float = 3600):
    """Run a step with its output in WORK/<log>; its stdout is returned."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / log
    with path.open("a") as out:
        out.write(f"$ {shlex.join(argv)}\n")
        out.flush()
        done = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=out, text=True, timeout=timeout,
            env={**os.environ, **(env or {})}, cwd=REPO,
        )  # fmt: skip
        out.write(done.stdout)
    if done.returncode:
        tail = "\n".join(path.read_text(errors="replace").splitlines()[-15:])
        raise E2EError(f"{shlex.join(argv[:3])} exited {done.returncode}; {path}:\n{tail}")
    return done.stdout


def exports(text: str) -> dict[str, str]:
    """`export K=V` lines (the services' CLIs print them) as a dict."""
    pairs = (line.removeprefix("export ").split("=", 1) for line in text.splitlines())
    return {key: value for key, value in (p for p in pairs if len(p) == 2)}


class ImageBuild(threading.Thread):
    """build_image.sh in the background: it needs no node, so it runs while
    the node comes up (debootstrap and pip mostly wait on the network)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.ref: str | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        began = time.monotonic()
        try:
            self.ref = run(["bash", str(HERE / "build_image.sh")], "image.log").strip()
        except BaseException as err:  # reported by result()
            self.error = err
        self.seconds = time.monotonic() - began

    def result(self) -> str:
        self.join()
        if self.error:
            raise self.error
        assert self.ref
        return self.ref


class EndToEnd:
    def __init__(self, keep: bool = False, scale: float = 2.0):
        self.keep, self.scale = keep, scale
        # This run's logs only; the previous run's stay beside them.
        if WORK.exists():
            shutil.rmtree(WORK.with_name("e2e.previous"), ignore_errors=True)
            WORK.rename(WORK.with_name("e2e.previous"))
        WORK.mkdir(parents=True)
        self.timeline = Timeline()
        self.kubeconfig = CACHE / "cluster" / "kubeconfig"
        self.services_env: dict[str, str] = {}
        self.image = ""
        self.node = ""
        self.found: dict[str, Any] = {}
        self.installed = False  # the chart: uninstalled at the end only if it was installed

    # ------------------------------------------------------------- clients
    def kubectl(self, *args: str, log: str = "kubectl.log", timeout: float = 300) -> str:
        argv = [str(BIN / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        return run(argv, log, timeout=timeout)

    def kubectl_words(self) -> str:
        return f"{BIN / 'kubectl'} --kubeconfig {self.kubeconfig}"

    def api(self):
        from kubernetes import client, config

        config.load_kube_config(str(self.kubeconfig))
        return client.ApiClient()

    def s3(self):
        import boto3
        from botocore.config import Config

        env = self.services_env
        return boto3.client(
            "s3",
            endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
            config=Config(s3={"addressing_style": "path"}),
        )

    # ------------------------------------------------------------------ up
    def up(self) -> None:
        stage = self.timeline.stage
        build = ImageBuild()
        build.start()
        with stage("node up"):
            self.node_up()
        with stage("image build (waited for)"):
            self.image = build.result()
        print(f"e2e: image {self.image} built in {build.seconds:.0f}s", flush=True)
        with stage("image import into containerd"):
            self.import_image()
        with stage("services up (MLflow, S3)"):
            self.services_up()
        with stage("helm install + operator Ready"):
            self.install_chart()
        with stage("samples applied"):
            self.apply_samples()

    def node_up(self) -> None:
        out = run([sys.executable, str(HERE / "node.py"), "up"], "node.log", timeout=3600)
        self.kubeconfig = Path(out.strip().splitlines()[-1])
        from kubernetes import client

        selector = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
        nodes = client.CoreV1Api(self.api()).list_node(label_selector=selector).items
        if not nodes:
            raise E2EError(f"node.py up: no node labelled {selector}; see {WORK / 'node.log'}")
        self.node = nodes[0].metadata.name
        addresses = nodes[0].status.addresses
        self.node_ip = next(a.address for a in addresses if a.type == "InternalIP")
        print(f"e2e: node {self.node} Ready, pods reach the host at {self.node_ip}", flush=True)

    def import_image(self) -> None:
        import node as nodes

        archive = CACHE / "node" / "image" / f"flywheel-{self.image.rsplit(':', 1)[1]}.tar"
        if not archive.exists():
            raise E2EError(f"{archive} is missing: build_image.sh made no archive; see image.log")
        done = nodes.Node(CACHE).import_image(archive)
        print(f"e2e: {self.image} {'imported' if done else 'already in containerd'}", flush=True)

    def services_up(self) -> None:
        # Bound to the node's address, which pods reach; their own state dir so
        # a loopback instance `make test` left running is never reused here.
        env = {
            "FLYWHEEL_SERVICES_HOST": self.node_ip,
            "FLYWHEEL_SERVICES_DIR": str(CACHE / "node" / "services"),
        }
        script = str(REPO / "tests" / "services" / "mlflowserver.py")
        self.services_env = exports(run([sys.executable, script, "up"], "services.log", env))
        self.services_env.update(env)

    def install_chart(self) -> None:
        for namespace in (SYSTEM_NS, NS):
            self.namespace(namespace)
        env = self.services_env
        repository, tag = self.image.rsplit(":", 1)
        self.kubectl("apply", "--server-side", "-f", str(REPO / "charts" / "flywheel" / "crds"))
        self.installed = True  # even a release whose --wait timed out is uninstalled
        run([
            str(BIN / "helm"), "upgrade", "--install", RELEASE, str(REPO / "charts" / "flywheel"),
            f"--kubeconfig={self.kubeconfig}", "--namespace", SYSTEM_NS,
            "--values", str(HERE / "values-e2e.yaml"),
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", f"mlflow.trackingUri={env['MLFLOW_TRACKING_URI']}",
            "--set", f"artifacts.s3Endpoint={env['MLFLOW_S3_ENDPOINT_URL']}",
            "--wait", "--timeout", f"{int(300 * self.scale)}s",
        ], "helm.log")  # fmt: skip

    def namespace(self, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": RESTRICTED}}  # fmt: skip
        manifest = WORK / f"namespace-{name}.json"
        manifest.write_text(json.dumps(body))
        self.kubectl("apply", "--server-side", "-f", str(manifest))

    def apply_samples(self) -> None:
        from sample_data import upload_sample_data

        env = self.services_env
        self.kubectl(
            "-n", NS, "create", "secret", "generic", SECRET,
            f"--from-literal=AWS_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']}",
        )  # fmt: skip
        s3 = self.s3()
        s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
        upload_sample_data(_Store(s3))
        self.kubectl("-n", NS, "apply", "-k", str(REPO / "manifests" / "demo"))

    # ---------------------------------------------------------------- loop
    def run_loop(self) -> Loop:
        """The demo's story, timed; returns the narrator (it knows the names)."""
        os.environ["MLFLOW_TRACKING_URI"] = self.services_env["MLFLOW_TRACKING_URI"]
        operator_log = f"{self.kubectl_words()} -n {SYSTEM_NS} logs deploy/{RELEASE}"
        loop = Loop(
            NS, operator_log, self.kubectl_words(), self.timeline, str(self.kubeconfig), self.scale
        )
        loop.run()
        return loop

    # ---------------------------------------------------------------- down
    def collect(self) -> None:
        """The state of everything, for reading after the node is gone."""
        out = WORK / "state"
        out.mkdir(parents=True, exist_ok=True)
        for what, args in {
            "objects.txt": ["get", "all,flywheel,events,cronjobs", "-A", "-o", "wide"],
            "flywheel.yaml": ["get", "flywheel", "-A", "-o", "yaml"],
            "pods.txt": ["describe", "pods", "-A"],
        }.items():
            try:
                (out / what).write_text(self.kubectl(*args, log="collect.log"))
            except (E2EError, subprocess.TimeoutExpired) as err:
                (out / what).write_text(f"could not collect: {err}\n")
        try:
            from kubernetes import client

            core = client.CoreV1Api(self.api())
            for pod in core.list_pod_for_all_namespaces().items:
                if pod.metadata.namespace not in (NS, SYSTEM_NS):
                    continue
                for container in pod.spec.containers:
                    try:
                        text = core.read_namespaced_pod_log(
                            pod.metadata.name, pod.metadata.namespace, container=container.name
                        )
                    except Exception as err:  # a pod that never started has no log
                        text = f"(no log: {err})"
                    name = f"{pod.metadata.namespace}.{pod.metadata.name}.{container.name}.log"
                    (out / name).write_text(text)
        except Exception as err:
            print(f"e2e: could not collect pod logs: {err}", file=sys.stderr)
        print(f"e2e: logs and state kept in {WORK}", flush=True)

    def down(self) -> None:
        """Everything down, each step on its own: one failing does not stop the rest."""
        steps = [
            ("helm uninstall", self.uninstall_chart),
            ("node down", lambda: run([sys.executable, str(HERE / "node.py"), "down"],
                                      "node.log", timeout=600)),
            ("services down", self.services_down),
        ]  # fmt: skip
        for name, step in steps:
            try:
                with self.timeline.stage(name):
                    step()
            except Exception as err:
                print(f"e2e: {name} failed: {err}", file=sys.stderr, flush=True)

    def uninstall_chart(self) -> None:
        if not self.installed:
            return
        run([str(BIN / "helm"), "uninstall", RELEASE, f"--kubeconfig={self.kubeconfig}",
             "--namespace", SYSTEM_NS, "--wait", "--timeout", "120s"], "helm.log")  # fmt: skip

    def services_down(self) -> None:
        env = {"FLYWHEEL_SERVICES_DIR": str(CACHE / "node" / "services")}
        if self.services_env.get("FLYWHEEL_SERVICES_HOST"):
            env["FLYWHEEL_SERVICES_HOST"] = self.services_env["FLYWHEEL_SERVICES_HOST"]
        for script in ("mlflowserver.py", "objectstore.py"):
            run([sys.executable, str(REPO / "tests" / "services" / script), "down"],
                "services.log", env)  # fmt: skip


class _Store:
    """What sample_data.upload_sample_data wants of an object store."""

    def __init__(self, s3):
        self._s3 = s3

    def client(self):
        return self._s3

    def make_bucket(self, name: str) -> str:
        with contextlib.suppress(self._s3.exceptions.BucketAlreadyOwnedByYou):
            self._s3.create_bucket(Bucket=name)
        return name


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave everything up at the end")
    args = parser.parse_args(argv)
    # The steps and checks live in test_e2e.py, so a failure is named by its test.
    import pytest

    os.environ["FLYWHEEL_E2E"] = "1"
    if args.keep:
        os.environ["FLYWHEEL_E2E_KEEP"] = "1"
    return pytest.main([str(HERE / "test_e2e.py"), "-v", "-s", "-p", "no:cacheprovider"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
