"""The `pod_runner` session fixture: pods bound to node `runner-0` run for real.

A pytest plugin (tests/conftest.py: `pytest_plugins = [..., "cluster.runner_fixture"]`).
It starts tests/cluster/podrunner.py in this process with the image map
`flywheel -> the bin dir of this Python`, so the project's own image runs the
commands installed in this environment (`flywheel ...`, `python ...`), and stops
it when the session ends. A runner someone else keeps alive for the same node
(`python tests/cluster/podrunner.py ...`) is used as it is, and left running
(`runner.serving` tells which). While it runs, pods have IPs in 198.18.0.0/16,
routed to `lo` (see podrunner's docstring), and the tests dial them directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import controlplane  # noqa: E402
import podrunner  # noqa: E402


@pytest.fixture(scope="session")
def pod_runner(control_plane, tmp_path_factory):
    _taint_kwok_node(control_plane)
    # Not resolved: the venv's bin dir, whose python is the venv's interpreter.
    image_map = {"flywheel": Path(sys.executable).parent}
    runner = podrunner.PodRunner(
        control_plane.kubeconfig, image_map, tmp_path_factory.mktemp("pod-runner")
    )
    if podrunner.serving_instance(control_plane.kubeconfig, runner.node_name):
        yield runner  # served by a runner outside this session: not ours to start or stop
        return
    with _machine_wide_lock():
        runner.start()
        try:
            runner.wait_schedulable()
            yield runner
        finally:
            runner.stop()


# Pod IPs and their route to lo are machine-wide: two runners (two test sessions
# from two clones, each with its own control plane) would hand out the same
# addresses and the first to stop would remove the other's route. A session
# waits here for the other to finish.
RUNNER_LOCK = Path("/tmp/flywheel-pod-runner.lock")


@contextlib.contextmanager
def _machine_wide_lock():
    with RUNNER_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _taint_kwok_node(control_plane) -> None:
    """A cluster started before kwok's node was tainted would let kwok take (and
    fake) the pods meant for the runner: add the taint where it is missing."""
    name = controlplane.NODE_NAME
    if control_plane.kubectl("get", "node", name, check=False).returncode != 0:
        return
    key, value = controlplane.KWOK_ANNOTATION
    control_plane.kubectl("taint", "node", name, f"{key}={value}:NoSchedule", "--overwrite")
