#!/usr/bin/env python3
"""A kubelet stand-in: the pods bound to one node run for real, as local processes.

    python tests/cluster/podrunner.py --kubeconfig K --image-map flywheel=/path/to/venv/bin

There is no container runtime on the test machines, yet the operator's Jobs must
really execute, and the operator must read their results as it would in any
cluster. So `runner-0` is a real Node (lease, heartbeat, Ready condition) whose
"kubelet" is this module. For every pod bound to it, it runs each container's
command with exactly the command, args and environment the pod spec gives
(`$(VAR)` expanded as kubelet expands it; env from literals, Secrets,
ConfigMaps, the downward API, envFrom), init containers first, then the
containers side by side; and writes the container statuses as kubelet writes
them: running, then terminated with exitCode, reason (Completed or Error),
startedAt/finishedAt and the termination message (the termination-message file,
capped at 4096 bytes; with FallbackToLogsOnError and an empty file on failure,
the last 80 lines / 2048 bytes of the log). Pod phase follows kubelet's rules
(restartPolicy Never, OnFailure and Always, restart in place with kubelet's
crash-loop back-off 0 s, 10 s, 20 s, ... 300 s); activeDeadlineSeconds fails the
pod with reason DeadlineExceeded; a deleted pod's processes get SIGTERM, the
grace period, then SIGKILL, and the pod is then deleted with grace period 0 (so a
Deployment's scale-down or rollout stops its servers gracefully).

Each pod gets its own IP, 198.18.x.y, reported as status.podIP/podIPs and given
to fieldRef status.podIP; a Service's EndpointSlices (made by the real
controller-manager) list the ready ones, and the tests (or the operator) reach
each pod's server on <podIP>:<port> from this machine. The runner makes
198.18.0.0/16 (part of RFC 2544's benchmarking range, used by no real network)
local with one route, `ip route add local 198.18.0.0/16 dev lo` (removed on
stop), so every address in it can be bound and dialled, as 127.0.0.0/8 can. That
needs CAP_NET_ADMIN (root); without it pod IPs are 127.10.x.y, which work but
which the apiserver refuses in EndpointSlices (no loopback endpoints), so
Services then list no pods. Addresses are handed out round-robin, as host-local
IPAM does, and freed when the pod's processes are gone.

Probes run as kubelet runs them: startupProbe, readinessProbe and livenessProbe
with httpGet (host = pod IP unless set, port by number or container port name,
HTTP or HTTPS without certificate checks, 200-399 succeeds), tcpSocket, or exec
(the command in the container's environment, killed at timeoutSeconds);
initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold and
failureThreshold as kubelet's probe workers count them. A container is Started
once its startup probe succeeds, and ready once its readiness probe succeeds
(without one: as soon as it runs); ContainersReady and Ready follow. A failed
liveness or startup probe kills the container (SIGTERM, its grace period,
SIGKILL) and restarts it unless restartPolicy is Never. Pod status is written
only when it changes.

An image maps to local executables through the image map: `flywheel=/dir`
serves every image whose repository is `flywheel` or ends in `/flywheel`
(`ghcr.io/x/flywheel:1.2`) by putting /dir first on PATH. Any other image is
"not present": the container waits with ErrImageNeverPull (imagePullPolicy
Never) or ImagePullBackOff, and the pod stays Pending, as with a real kubelet.

Deviations from a real kubelet, most forced by having no containers:
- The termination-message file cannot be /dev/termination-log (or any
  terminationMessagePath): each container instance gets its own file, named in
  the env variable FLYWHEEL_TERMINATION_LOG, and every occurrence of the
  terminationMessagePath in command, args and env values is rewritten to it.
- Volumes cannot be mounted: emptyDir, configMap, secret, projected (tokens from
  the TokenRequest API) and downwardAPI volumes are materialised as directories,
  hostPath and PersistentVolumeClaims bound to hostPath/local PVs are used in
  place; the process finds them through FLYWHEEL_VOLUME_MOUNTS, a JSON map from
  mountPath to local directory. workingDir is used as is when it exists on this
  machine (or maps into a mount); otherwise it is created inside the pod's
  directory. The default working directory (and HOME) is a fresh per-pod dir.
- There is no network namespace: every pod shares the host's network, so a
  server listening on 0.0.0.0:8080 (as it would in a pod) would take the port
  from every other pod. Each process therefore gets its pod's IP in
  FLYWHEEL_BIND_ADDRESS and must listen on that address only (the model server
  does; in a real cluster nothing sets the variable and it binds 0.0.0.0).
  Anything may still connect to 127.0.0.1 or another pod's address; ports bound
  on the pod IP are reachable from the host, as pod IPs are from a real node.
  hostNetwork pods get the host's IP, 127.0.0.1.
- The process environment is the pod's env plus what a runtime adds (PATH from
  the image map, HOSTNAME, HOME) and the three variables above; nothing from the
  runner's own environment leaks in. No Service link variables
  (KUBERNETES_SERVICE_HOST, ...): the service network is virtual here, Services
  have no ClusterIP traffic (no kube-proxy); clients use the EndpointSlices.
- Processes run as the runner's user in the host's namespaces: no user switch
  (runAsUser, runAsNonRoot), capabilities, seccomp, read-only root, cgroups.
  Resource limits are not enforced (no OOMKilled).
- gRPC probes are not supported (they fail); an httpGet probe does not follow
  redirects (a 3xx is a success, as it is for kubelet unless the target fails);
  a sidecar's startup probe does not hold back the next init container; no
  readinessGates. No Events are recorded: probe failures and kills are in
  runner.log.
- No logs/exec/port-forward server: each container instance logs to
  <pod dir>/logs/<container>/<restartCount>.log, and the pod's annotation
  `flywheel.dev/runner-log` names that logs directory.
- At most `max_pods` pods (default 16, room for ~8 long-running model servers
  of ~300 MB each next to Jobs) run at once; further pods wait in order. A
  running server holds its slot as long as it lives. A pod that cannot start
  (image not present) gives up its slot (keeping its IP); its
  activeDeadlineSeconds is still enforced by a timer.
- An image is its map entry, whatever its tag or digest (imageID
  `podrunner://<dir>`), and has no ENTRYPOINT: a container without `command`
  ends with StartError (exit 128), as an exec failure does.
- A pod found already started by an earlier runner instance (its processes are
  gone) is failed with ContainerStatusUnknown, as kubelet reports lost
  containers, whatever its restartPolicy.
- The crash-loop back-off never resets after a long run; a container waiting
  with CreateContainerConfigError (missing Secret or key) is retried every 10 s.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.client
import json
import logging
import math
import os
import platform
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger("podrunner")

NODE_NAME = "runner-0"
RUNNER_LABEL = "flywheel.dev/pod-runner"
LOG_ANNOTATION = "flywheel.dev/runner-log"
INSTANCE_ANNOTATION = "flywheel.dev/runner-instance"
TERMINATION_ENV = "FLYWHEEL_TERMINATION_LOG"
MOUNTS_ENV = "FLYWHEEL_VOLUME_MOUNTS"
BIND_ENV = "FLYWHEEL_BIND_ADDRESS"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
HOST_IP = "127.0.0.1"
# Pod IPs are <network>.x.y, x in 0..255, y in 1..254. 198.18.0.0/15 is set aside for
# network benchmarks (RFC 2544): no real network uses it. 127.10 is the fallback.
POD_NETWORK, LOOPBACK_NETWORK = "198.18", "127.10"
NODE_RESOURCES = {"cpu": "8", "memory": "32Gi", "pods": "50", "ephemeral-storage": "100Gi"}
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10.0
MESSAGE_LIMIT = 4096  # kubelet's MaxContainerTerminationMessageLength
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048  # kubelet's log tail for FallbackToLogsOnError
BACKOFF_INITIAL, BACKOFF_MAX = 10.0, 300.0  # kubelet's crash-loop back-off
CONFIG_RETRY = 10.0
MIN_GRACE = 2.0  # kubelet never kills with less
MAX_PODS = 16
PROBE_KINDS = ("startup", "readiness", "liveness")
PROBE_BODY_LIMIT = 10 * 1024  # kubelet reads at most this much of an httpGet answer
PROBE_OUTPUT_LIMIT = 1024
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
TERMINAL = ("Succeeded", "Failed")
POLL = 0.1
WATCH_SECONDS = 120  # the apiserver ends each watch after this; it is then resumed

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


# ------------------------------------------------------------------ small helpers


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def expand(text: str, *contexts: Mapping[str, str]) -> str:
    """kubelet's `$(VAR)` expansion (third_party/forked/golang/expansion): `$(VAR)`
    becomes the value when VAR is defined and stays as written otherwise; `$$`
    is an escaped `$`; any other `$` is kept."""

    def lookup(name: str) -> str:
        for context in contexts:
            if name in context:
                return context[name]
        return f"$({name})"

    out, checkpoint, cursor = [], 0, 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            advance = 1
            if following == "$":
                out.append("$")
            elif following == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                else:
                    out.append(lookup(text[cursor + 2 : close]))
                    advance = close - cursor
            else:
                out.append("$" + following)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def image_repository(image: str) -> str:
    """`ghcr.io/x/flywheel:1.2@sha256:...` -> `ghcr.io/x/flywheel`."""
    name = image.split("@", 1)[0]
    if name.rfind(":") > name.rfind("/"):
        name = name[: name.rfind(":")]
    return name


def resolve_image(image: str, image_map: Mapping[str, Path]) -> Path | None:
    repository = image_repository(image)
    for key, bin_dir in image_map.items():
        if repository == key or repository.endswith("/" + key):
            return bin_dir
    return None


_SUFFIXES = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "P": 1e15, "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
    "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip


def quantity(text: str | int | float) -> float:
    match = re.fullmatch(r"([+-]?[0-9.]+)(|[numkMGTPE]|[KMGTPE]i)", str(text).strip())
    if not match:
        raise ValueError(f"not a quantity: {text!r}")
    return float(match[1]) * _SUFFIXES[match[2]]


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by signal N: 128+N


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _tail(path: Path) -> str:
    """The last FALLBACK_LINES lines of a log, at most FALLBACK_BYTES."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 64 * 1024))
            data = file.read()
    except OSError:
        return ""
    lines = data.splitlines(keepends=True)[-FALLBACK_LINES:]
    return b"".join(lines)[-FALLBACK_BYTES:].decode(errors="replace")


class ConfigError(Exception):
    """What kubelet reports as CreateContainerConfigError."""


class VolumeError(Exception):
    """A volume that cannot be set up; `retry` when a later attempt may work."""

    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


# ----------------------------------------------------------------- pod network


def _bindable(ip: str) -> bool:
    """Whether `ip` is an address of this host (delivered locally)."""
    with socket.socket() as sock:
        try:
            sock.bind((ip, 0))
        except OSError:
            return False
    return True


class AddressPool:
    """Pod IPs, one per pod, in a /16. Handed out round-robin, as host-local IPAM
    does, so a freed address is not reused at once: a client still holding a
    deleted pod's endpoint must not reach the pod that came next."""

    def __init__(self, network: str = POD_NETWORK, size: int = 256 * 254):
        self.network = network
        self.size = size
        self._lock = threading.Lock()
        self._next = 0
        self._held: dict[str, str] = {}  # pod uid -> address

    def address(self, index: int) -> str:
        return f"{self.network}.{index // 254}.{index % 254 + 1}"

    def acquire(self, key: str) -> str:
        with self._lock:
            if key in self._held:
                return self._held[key]
            taken = set(self._held.values())
            for step in range(self.size):
                index = (self._next + step) % self.size
                if self.address(index) not in taken:
                    self._next = (index + 1) % self.size
                    self._held[key] = self.address(index)
                    return self._held[key]
        raise RuntimeError(f"no free pod IP in {self.network}.0.0/16")

    def release(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._held.get(key)

    def held(self) -> dict[str, str]:
        with self._lock:
            return dict(self._held)


# ---------------------------------------------------------------------- probes


@dataclass
class Probe:
    """One probe of one container instance, counted as kubelet's probe worker counts:
    `result` changes only after successThreshold successes or failureThreshold
    failures in a row. It starts unknown (None): not ready, not started, alive."""

    kind: str  # startup, readiness or liveness
    spec: dict[str, Any]
    result: bool | None = None
    last: bool | None = None
    run: int = 0
    message: str = ""

    def record(self, ok: bool, message: str) -> bool:
        """Count one outcome; True when `result` changed."""
        self.run = self.run + 1 if ok == self.last else 1
        self.last, self.message = ok, message
        threshold = self.spec.get("successThreshold" if ok else "failureThreshold") or (
            1 if ok else 3
        )
        if self.run < threshold or self.result == ok:
            return False
        self.result = ok
        return True


def http_probe(
    host: str, port: int, spec: dict[str, Any], timeout: float, agent: str
) -> tuple[bool, str]:
    """kubelet's httpGet probe: a GET whose status 200-399 is a success."""
    scheme = (spec.get("scheme") or "HTTP").upper()
    path = spec.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    headers = {"User-Agent": agent, "Accept": "*/*"}
    headers.update({h["name"]: h["value"] for h in spec.get("httpHeaders") or []})
    if scheme == "HTTPS":  # kubelet does not verify the certificate either
        context = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    url = f"{scheme.lower()}://{host}:{port}{path}"
    try:
        conn.request("GET", path, headers=headers)  # a Host header given replaces the default
        response = conn.getresponse()
        response.read(PROBE_BODY_LIMIT)
    except (OSError, http.client.HTTPException) as err:
        return False, f'Get "{url}": {err}'
    finally:
        conn.close()
    if 200 <= response.status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {response.status}"


def tcp_probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as err:
        return False, f"dial tcp {host}:{port}: {err}"


def exec_probe(
    argv: list[str], env: Mapping[str, str], cwd: Path, timeout: float
) -> tuple[bool, str]:
    """The command in the container's environment; exit 0 succeeds. Killed (with
    its process group) at the timeout, which fails it, as kubelet's exec probe."""
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as err:
        return False, f"exec {argv[:1]}: {err}"
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)  # not reaped yet: the group is still its own
        proc.communicate()
        return False, f"command {argv!r} timed out after {timeout:g}s"
    text = output[-PROBE_OUTPUT_LIMIT:].decode(errors="replace")
    return proc.returncode == 0, text if proc.returncode == 0 else f"exit {proc.returncode}: {text}"


# --------------------------------------------------------------------- API access


class Api:
    """Raw JSON access to the apiserver through the kubernetes client's transport."""

    def __init__(self, kubeconfig: str | Path):
        self.client = kube_config.new_client_from_config(config_file=str(kubeconfig))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: Any = 30.0,
    ) -> dict[str, Any]:
        response = self.raw(method, path, body, query, content_type, timeout)
        data = response.data
        return json.loads(data) if data else {}

    def raw(self, method, path, body=None, query=None, content_type="application/json", timeout=30):
        return self.client.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )

    def get(self, path: str, missing_ok: bool = False) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except ApiException as err:
            if missing_ok and err.status == 404:
                return None
            raise

    def close(self) -> None:
        self.client.close()


def pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}{sub}"


# -------------------------------------------------------------------- pod tasks


@dataclass
class Slot:
    """One container of a pod: its spec, reported status and current process."""

    container: dict[str, Any]
    init: bool
    sidecar: bool  # an init container with restartPolicy Always
    status: dict[str, Any]
    proc: subprocess.Popen | None = None
    log_file: Any = None
    term_file: Path | None = None
    container_id: str = ""
    started_at: str = ""
    done: bool = False  # will not run again
    blocked: bool = False  # image not present: waits as long as the pod lives
    next_start: float = 0.0  # time.monotonic() before which it may not (re)start
    failures: int = 0
    env: dict[str, str] = field(default_factory=dict)  # the process's, for exec probes
    pod_env: dict[str, str] = field(default_factory=dict)  # the pod spec's, for $(VAR)
    cwd: Path | None = None
    probes: dict[str, Probe] = field(default_factory=dict)  # of the current instance
    probe_stop: threading.Event | None = None
    killed_by: str = ""  # the probe that failed: the process is being killed
    kill_deadline: float | None = None  # time.monotonic() of its SIGKILL

    @property
    def name(self) -> str:
        return self.container["name"]

    def exit_code(self) -> int | None:
        terminated = self.status["state"].get("terminated")
        return terminated["exitCode"] if terminated else None


@dataclass
class PodTask:
    pod: dict[str, Any]  # the newest copy seen by the watch
    state: str = "queued"  # queued, running, parked, done
    stop: threading.Event = field(default_factory=threading.Event)
    grace: float = 30.0
    dir: Path | None = None
    start_time: str = ""
    deadline: float | None = None  # epoch seconds
    slots: list[Slot] | None = None
    volumes: dict[str, Path] = field(default_factory=dict)
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)
    terminal: bool = False
    gone: bool = False
    deleted: bool = False
    timer: threading.Timer | None = None
    retry: float | None = None  # seconds until the next set-up attempt
    ip: str = ""
    pushed: str = ""  # the last status written, to write only changes

    @property
    def uid(self) -> str:
        return self.pod["metadata"]["uid"]

    @property
    def ref(self) -> str:
        meta = self.pod["metadata"]
        return f"{meta['namespace']}/{meta['name']}"

    @property
    def restart_policy(self) -> str:
        return self.pod["spec"].get("restartPolicy") or "Always"

    def init_slots(self) -> list[Slot]:
        return [s for s in self.slots or [] if s.init]

    def main_slots(self) -> list[Slot]:
        return [s for s in self.slots or [] if not s.init]


# ------------------------------------------------------------------ the runner


class PodRunner:
    """Plays the kubelet of one node: `start()` registers it and runs its pods in
    threads of this process; `stop()` kills what runs and leaves the node to go
    NotReady as a dead kubelet's would."""

    def __init__(
        self,
        kubeconfig: str | Path,
        image_map: Mapping[str, str | Path],
        work_dir: str | Path,
        node_name: str = NODE_NAME,
        max_pods: int = MAX_PODS,
        restart_backoff: float = BACKOFF_INITIAL,
    ):
        self.kubeconfig = Path(kubeconfig)
        self.image_map = {key: Path(value) for key, value in image_map.items()}
        self.work_dir = Path(work_dir).resolve()
        self.node_name = node_name
        self.max_pods = max_pods
        self.restart_backoff = restart_backoff
        self.instance = uuid.uuid4().hex[:12]
        self.log_path = self.work_dir / "runner.log"
        self.api: Api | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._tasks: dict[str, PodTask] = {}
        self._ips = AddressPool()  # replaced on start() by the network that works here
        self._route_added = False
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._watch_response = None
        self._log_handler: logging.Handler | None = None
        self._condition_since = _now()
        self._kubelet_version = "v0.0.0"

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> PodRunner:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._log_handler = logging.FileHandler(self.log_path)
        self._log_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s")
        )
        log.addHandler(self._log_handler)
        log.setLevel(logging.INFO)
        self.api = Api(self.kubeconfig)
        self._ips = AddressPool(self._pod_network())
        with contextlib.suppress(Exception):
            self._kubelet_version = self.api.request("GET", "/version")["gitVersion"]
        try:
            self._register_node()
        except BaseException:
            self.stop()
            raise
        self._pool = ThreadPoolExecutor(self.max_pods, thread_name_prefix="pod")
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._watch_loop, "watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "runner %s serves node %s (work dir %s)", self.instance, self.node_name, self.work_dir
        )
        return self

    def stop(self) -> None:
        if self.api is None:
            return
        self._halt.set()
        response = self._watch_response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
        with self._lock:
            for task in self._tasks.values():
                if task.timer:
                    task.timer.cancel()
        if self._pool:  # workers see the halt, kill their processes and return
            self._pool.shutdown(wait=True, cancel_futures=True)
        for thread in self._threads:
            thread.join(timeout=5)
        with contextlib.suppress(Exception):  # tell a later runner nobody serves the node
            body = {"metadata": {"annotations": {INSTANCE_ANNOTATION: None}}}
            self.api.request("PATCH", f"/api/v1/nodes/{self.node_name}", body, content_type=MERGE)
        if self._route_added:
            self._ip_route("del")
            self._route_added = False
        log.info("runner %s stopped", self.instance)
        self.api.close()
        self.api = None
        if self._log_handler:
            log.removeHandler(self._log_handler)
            self._log_handler.close()

    @property
    def pod_network(self) -> str:
        return f"{self._ips.network}.0.0/16"

    def _pod_network(self) -> str:
        """The pod IPs' network: 198.18.0.0/16 delivered to `lo` by one "AnyIP" route
        (`ip route add local 198.18.0.0/16 dev lo`), added here unless present. It
        needs CAP_NET_ADMIN; without it, 127.10.0.0/16, which lo serves anyway, but
        which the apiserver refuses in EndpointSlices (loopback addresses are not
        valid endpoints), so Services then list no pods."""
        probe = f"{POD_NETWORK}.0.1"
        if _bindable(probe):
            return POD_NETWORK
        error = self._ip_route("add")
        if not error and _bindable(probe):
            self._route_added = True
            log.info("routing %s.0.0/16 to lo for pod IPs", POD_NETWORK)
            return POD_NETWORK
        log.warning(
            "cannot route %s.0.0/16 to lo (%s): pod IPs are loopback addresses %s.x.y, "
            "which EndpointSlices refuse",
            POD_NETWORK,
            error or "not local after adding the route",
            LOOPBACK_NETWORK,
        )
        return LOOPBACK_NETWORK

    @staticmethod
    def _ip_route(action: str) -> str:
        """`ip route add|del local <pod network> dev lo`; the error, or "" on success."""
        command = ["ip", "route", action, "local", f"{POD_NETWORK}.0.0/16", "dev", "lo"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as err:
            return str(err)
        return (done.stderr.strip() or f"exit {done.returncode}") if done.returncode else ""

    def wait_schedulable(self, timeout: float = 60.0) -> None:
        """Wait until the node is Ready without the not-ready/unreachable taints the
        node lifecycle controller left while no runner served it."""
        deadline = time.monotonic() + timeout
        while True:
            node = self.api.request("GET", f"/api/v1/nodes/{self.node_name}")
            taints = [t["key"] for t in node["spec"].get("taints") or []]
            stale = [key for key in taints if key.startswith("node.kubernetes.io/")]
            if not stale:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.node_name} still tainted: {stale}")
            time.sleep(0.5)

    @property
    def serving(self) -> bool:
        """Whether this instance runs (a test may be handed one it did not start)."""
        return self.api is not None

    def pod_ips(self) -> dict[str, str]:
        """The pod IPs this runner holds, by pod uid: pods whose processes may still run."""
        return self._ips.held()

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------------- node

    def _node_conditions(self) -> list[dict[str, str]]:
        beat = _now()
        rows = [
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ]
        return [
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": beat,
                "lastTransitionTime": self._condition_since,
            }
            for kind, status, reason, message in rows
        ]

    def _register_node(self) -> None:
        labels = {
            RUNNER_LABEL: "true",
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _arch(),
            "kubernetes.io/hostname": self.node_name,
        }
        meta = {
            "name": self.node_name,
            "labels": labels,
            "annotations": {INSTANCE_ANNOTATION: self.instance},
        }
        path = f"/api/v1/nodes/{self.node_name}"
        try:
            self.api.request(
                "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": meta}
            )
        except ApiException as err:
            if err.status != 409:
                raise
            self.api.request("PATCH", path, {"metadata": meta}, content_type=MERGE)
        uname = os.uname()
        status = {
            "capacity": NODE_RESOURCES,
            "allocatable": NODE_RESOURCES,
            "conditions": self._node_conditions(),
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": self.instance,
                "systemUUID": self.instance,
                "bootID": self.instance,
                "kernelVersion": uname.release,
                "osImage": "flywheel pod runner (local processes)",
                "containerRuntimeVersion": "podrunner://1",
                "kubeletVersion": self._kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _arch(),
            },
        }
        self.api.request("PATCH", path + "/status", {"status": status}, content_type=STRATEGIC)
        node = self.api.request("GET", path)
        self._node_uid = node["metadata"]["uid"]
        self._renew_lease()

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{self.node_name}"
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": _micro_now(),
        }
        try:
            self.api.request("PATCH", path, {"spec": spec}, content_type=MERGE)
        except ApiException as err:
            if err.status != 404:
                raise
            owner = {
                "apiVersion": "v1",
                "kind": "Node",
                "name": self.node_name,
                "uid": self._node_uid,
            }
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.node_name,
                    "namespace": LEASE_NAMESPACE,
                    "ownerReferences": [owner],
                },
                "spec": spec,
            }
            self.api.request("POST", path.rsplit("/", 1)[0], lease)

    def _heartbeat_loop(self) -> None:
        while not self._halt.wait(HEARTBEAT_SECONDS):
            try:
                self._renew_lease()
                body = {"status": {"conditions": self._node_conditions()}}
                self.api.request(
                    "PATCH", f"/api/v1/nodes/{self.node_name}/status", body, content_type=STRATEGIC
                )
            except Exception:
                log.exception("node heartbeat failed")

    # -------------------------------------------------------------------- watch

    def _watch_loop(self) -> None:
        version = None
        selector = f"spec.nodeName={self.node_name}"
        while not self._halt.is_set():
            try:
                if version is None:
                    listing = self.api.request(
                        "GET", "/api/v1/pods", query={"fieldSelector": selector}
                    )
                    version = listing["metadata"]["resourceVersion"]
                    present = {pod["metadata"]["uid"] for pod in listing["items"]}
                    with self._lock:
                        vanished = [t.pod for uid, t in self._tasks.items() if uid not in present]
                    for pod in vanished:
                        self._on_event("DELETED", pod)
                    for pod in listing["items"]:
                        self._on_event("ADDED", pod)
                for kind, obj in self._watch(selector, version):
                    if kind == "ERROR":
                        if obj.get("code") == 410:  # too old: list again
                            version = None
                            break
                        raise RuntimeError(f"watch error: {obj}")
                    version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._on_event(kind, obj)
            except ApiException as err:
                if err.status == 410:
                    version = None
                elif not self._halt.is_set():
                    log.warning("pod watch: %s %s; retrying", err.status, err.reason)
                    self._halt.wait(1)
            except Exception:
                if not self._halt.is_set():
                    log.exception("pod watch failed; retrying")
                    self._halt.wait(1)

    def _watch(self, selector: str, version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        query = {
            "watch": "true",
            "fieldSelector": selector,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": WATCH_SECONDS,
        }
        response = self.api.raw(
            "GET", "/api/v1/pods", query=query, timeout=(10, WATCH_SECONDS + 30)
        )
        self._watch_response = response
        try:
            for line in iter_resp_lines(response):
                if self._halt.is_set():
                    return
                if line:
                    event = json.loads(line)
                    yield event["type"], event["object"]
        finally:
            self._watch_response = None
            response.release_conn()

    def _on_event(self, kind: str, pod: dict[str, Any]) -> None:
        try:
            self._dispatch(kind, pod)
        except Exception:
            log.exception("pod event %s for %s failed", kind, pod["metadata"].get("name"))

    def _dispatch(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        delete_now = None
        if self._halt.is_set():
            return
        with self._lock:
            task = self._tasks.get(uid)
            if task:
                task.pod = pod
            if kind == "DELETED":
                if task:
                    task.gone = True
                    task.grace = MIN_GRACE
                    task.stop.set()
                    self._tasks.pop(uid, None)
                    if task.state in ("parked", "done"):  # else its worker frees it
                        self._ips.release(uid)
                return
            if meta.get("deletionTimestamp"):
                grace = meta.get("deletionGracePeriodSeconds")
                if task and task.state in ("queued", "running"):
                    task.grace = max(MIN_GRACE, float(grace if grace is not None else 30))
                    task.stop.set()
                elif not (task and task.deleted):
                    if task is None:  # remembered until DELETED, so it is deleted once
                        task = self._tasks[uid] = PodTask(pod, state="done")
                    if task.timer:
                        task.timer.cancel()
                    task.deleted = True
                    delete_now = task
                    self._ips.release(uid)  # nothing of it runs (parked or done)
            elif task is None and (pod.get("status") or {}).get("phase") not in TERMINAL:
                task = self._tasks[uid] = PodTask(pod)
                log.info("pod %s: queued", task.ref)
                self._pool.submit(self._run_task, task)
        if delete_now:
            self._delete_pod(delete_now)

    def _delete_pod(self, task: PodTask) -> None:
        """What kubelet does once a terminating pod's containers are stopped."""
        task.deleted = True
        meta = task.pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": task.uid}}
        try:
            self.api.request("DELETE", pod_path(meta["namespace"], meta["name"]), body)
            log.info("pod %s: deleted", task.ref)
        except ApiException as err:
            if err.status not in (404, 409):
                log.warning("pod %s: delete failed: %s %s", task.ref, err.status, err.reason)

    # ------------------------------------------------------------------ one pod

    def _run_task(self, task: PodTask) -> None:
        result = "stopped"
        with self._lock:
            task.state = "running"
        try:
            result = "deleted" if task.stop.is_set() else self._run_pod(task)
            self._after(task, result)
        except Exception:
            log.exception("pod %s: runner error", task.ref)
        finally:
            leftovers = [s for s in task.slots or [] if s.proc is not None]
            for slot in leftovers:  # only after an error or a halt
                self._stop_probes(slot)
                _signal_group(slot.proc, signal.SIGKILL)
                slot.proc.wait()
                self._close_log(slot)
            with self._lock:
                task.state = "parked" if result == "parked" else "done"
                late_delete = task.stop.is_set() and not task.deleted and not task.gone
                if task.state == "done" or task.gone or task.deleted:
                    self._ips.release(task.uid)  # its processes are gone
            if late_delete and not self._halt.is_set():
                self._delete_pod(task)
            elif result == "parked":
                self._park(task)

    def _run_pod(self, task: PodTask) -> str:
        if task.slots is None:
            early = self._setup(task)
            if early:
                return early
        if task.volumes is None:
            return "parked"  # a volume the runner cannot provide: only the deadline is left
        policy = task.restart_policy
        sidecars = [s for s in task.init_slots() if s.sidecar]
        for slot in task.init_slots():
            if slot.sidecar or slot.exit_code() == 0:
                continue
            result = self._drive(task, [s for s in sidecars if s.proc] + [slot], [slot])
            if result != "done":
                return result
            if slot.exit_code() != 0 and policy == "Never":
                return "done"  # init failed: the pod is Failed, nothing else runs
        main = task.main_slots()
        result = self._drive(task, sidecars + main, main)
        if result == "done" and sidecars:
            self._kill(
                task, sidecars, float(task.pod["spec"].get("terminationGracePeriodSeconds", 30))
            )
        return result

    def _setup(self, task: PodTask) -> str | None:
        """Directories, slots, startTime and the first status; a result if nothing runs."""
        pod, spec = task.pod, task.pod["spec"]
        meta = pod["metadata"]
        status = pod.get("status") or {}
        task.dir = self.work_dir / f"{meta['namespace']}_{meta['name']}_{task.uid}"
        (task.dir / "logs").mkdir(parents=True, exist_ok=True)
        task.start_time = status.get("startTime") or _now()
        if spec.get("activeDeadlineSeconds") is not None:
            task.deadline = _epoch(task.start_time) + int(spec["activeDeadlineSeconds"])
        lost = any(  # a container that ran under an earlier runner instance
            {"running", "terminated"} & set(s.get("state") or {}) or s.get("restartCount")
            for s in status.get("containerStatuses") or []
        )
        task.slots = []
        for init, containers in ((True, spec.get("initContainers")), (False, spec["containers"])):
            for container in containers or []:
                sidecar = init and container.get("restartPolicy") == "Always"
                reason = "PodInitializing" if spec.get("initContainers") else "ContainerCreating"
                task.slots.append(
                    Slot(
                        container,
                        init,
                        sidecar,
                        {
                            "name": container["name"],
                            "image": container["image"],
                            "imageID": "",
                            "ready": False,
                            "started": False,
                            "restartCount": 0,
                            "state": {"waiting": {"reason": reason}},
                            "lastState": {},
                        },
                    )
                )
        annotations = {"metadata": {"annotations": {LOG_ANNOTATION: str(task.dir / "logs")}}}
        self.api.request(
            "PATCH", pod_path(meta["namespace"], meta["name"]), annotations, content_type=MERGE
        )
        if lost:  # started by an earlier runner whose processes died with it
            for slot in task.slots:
                slot.status["state"] = {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was terminated",
                        "startedAt": task.start_time,
                        "finishedAt": _now(),
                    }
                }
                slot.done = True
            self._push(task, phase="Failed")
            return "done"
        # The "sandbox": kubelet gives the pod its IP before any container is created.
        task.ip = HOST_IP if spec.get("hostNetwork") else self._ips.acquire(task.uid)
        try:
            task.volumes = self._prepare_volumes(task)
        except VolumeError as err:
            log.warning("pod %s: %s", task.ref, err)
            for slot in task.slots:
                slot.status["state"] = {
                    "waiting": {"reason": "ContainerCreating", "message": str(err)}
                }
            self._push(task)
            task.volumes = None
            if err.retry:  # set up again from the start on the next attempt
                task.slots, task.retry = None, CONFIG_RETRY
            return "parked"
        log.info("pod %s: started", task.ref)
        self._push(task)
        return None

    def _drive(self, task: PodTask, slots: list[Slot], awaited: list[Slot]) -> str:
        """Run `slots` until every one in `awaited` is done; restart per policy."""
        while True:
            if self._halt.is_set():
                self._kill(task, slots, MIN_GRACE, report=False)
                return "stopped"
            if task.stop.is_set():
                self._kill(task, slots, task.grace)
                return "deleted"
            if task.deadline is not None and time.time() >= task.deadline:
                grace = float(task.pod["spec"].get("terminationGracePeriodSeconds", 30))
                self._kill(task, slots, grace)
                return "deadline"
            changed = False
            for slot in slots:
                if slot.proc is not None and slot.proc.poll() is not None:
                    self._finish(task, slot, _exit_code(slot.proc.returncode), may_restart=True)
                    changed = True
                elif slot.proc is not None:
                    changed |= self._apply_probes(task, slot)
            for slot in slots:
                if (
                    not (slot.done or slot.blocked or slot.proc)
                    and time.monotonic() >= slot.next_start
                ):
                    self._start(task, slot)
                    changed = True
            if changed:
                self._push(task)
            if all(slot.done for slot in awaited):
                return "done"
            if not any(slot.proc for slot in slots) and all(
                slot.done or slot.blocked for slot in awaited
            ):
                return "parked"  # images not present: nothing will ever start
            task.stop.wait(POLL)

    def _after(self, task: PodTask, result: str) -> None:
        if result == "done":
            self._push(task)
        elif result == "deadline":
            log.info("pod %s: active deadline exceeded", task.ref)
            self._push(task, phase="Failed", reason="DeadlineExceeded", message=DEADLINE_MESSAGE)
        elif result == "deleted":
            if task.slots is not None and not task.gone:
                phase = self._phase(task, terminal=True)
                self._push(task, phase=phase if phase in TERMINAL else "Failed")
            if not task.gone:
                self._delete_pod(task)

    def _park(self, task: PodTask) -> None:
        """Give the worker slot back; come back for a retry or the active deadline."""
        when = [time.time() + task.retry] if task.retry else []
        task.retry = None
        if task.deadline is not None:
            when.append(task.deadline)
        if not when:
            return
        delay = max(0.0, min(when) - time.time())
        task.timer = threading.Timer(delay, self._unpark, [task])
        task.timer.daemon = True
        task.timer.start()

    def _unpark(self, task: PodTask) -> None:
        with self._lock:
            if task.state != "parked" or task.gone or task.deleted or self._halt.is_set():
                return
            task.state = "queued"
        if task.deadline is not None and time.time() >= task.deadline:
            with contextlib.suppress(Exception):
                self._push(
                    task, phase="Failed", reason="DeadlineExceeded", message=DEADLINE_MESSAGE
                )
            with self._lock:
                task.state = "done"
                self._ips.release(task.uid)
            return
        with contextlib.suppress(RuntimeError):  # the runner stopped meanwhile
            self._pool.submit(self._run_task, task)

    # ------------------------------------------------------------- containers

    def _start(self, task: PodTask, slot: Slot) -> None:
        container, pod = slot.container, task.pod
        image = container["image"]
        bin_dir = resolve_image(image, self.image_map)
        if bin_dir is None:
            if container.get("imagePullPolicy") == "Never":
                waiting = {
                    "reason": "ErrImageNeverPull",
                    "message": f'Container image "{image}" is not present '
                    "with pull policy of Never",
                }
            else:
                known = ", ".join(sorted(self.image_map)) or "none"
                waiting = {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{image}": ErrImagePull: '
                    f'the pod runner has no image "{image_repository(image)}" (it has: {known})',
                }
            slot.status["state"] = {"waiting": waiting}
            slot.blocked = True
            log.info("pod %s: container %s: %s", task.ref, slot.name, waiting["reason"])
            return
        try:
            env = self._container_env(pod, container)
        except ConfigError as err:
            slot.status["state"] = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(err)}
            }
            slot.next_start = time.monotonic() + CONFIG_RETRY
            log.info("pod %s: container %s: %s", task.ref, slot.name, err)
            return
        restart = slot.status["restartCount"]
        cdir = task.dir / "containers" / slot.name
        cdir.mkdir(parents=True, exist_ok=True)
        slot.term_file = cdir / f"termination-{restart}.log"
        slot.term_file.write_bytes(b"")
        term_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH

        def rewrite(text: str) -> str:
            return text.replace(term_path, str(slot.term_file))

        argv = [rewrite(expand(part, env)) for part in container.get("command") or []]
        argv += [rewrite(expand(part, env)) for part in container.get("args") or []]
        mounts = self._mounts(task, container)
        home = task.dir / "work"
        home.mkdir(exist_ok=True)
        process_env = {
            "PATH": f"{bin_dir}:{BASE_PATH}",
            "HOSTNAME": pod["metadata"]["name"],
            "HOME": str(home),
            **{key: rewrite(value) for key, value in env.items()},
            TERMINATION_ENV: str(slot.term_file),
            MOUNTS_ENV: json.dumps({path: str(local) for path, local in sorted(mounts.items())}),
            BIND_ENV: task.ip,  # no network namespace: the one address the pod may listen on
        }
        cwd = self._working_dir(task, container, mounts) or home
        log_path = task.dir / "logs" / slot.name / f"{restart}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        slot.log_file = log_path.open("ab")
        slot.container_id = f"podrunner://{uuid.uuid4().hex}"
        slot.started_at = _now()
        slot.env, slot.pod_env, slot.cwd = process_env, env, cwd
        try:
            if not argv:
                raise FileNotFoundError("no command: the pod runner knows no image entrypoint")
            slot.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=process_env,
                stdin=subprocess.DEVNULL,
                stdout=slot.log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:  # what a runtime reports when exec fails
            slot.log_file.write(f"{err}\n".encode())
            message = (
                f"failed to start container process: exec: {argv[:1]}: {err.strerror or err}"
                if argv
                else str(err)
            )
            self._finish(task, slot, 128, may_restart=True, reason="StartError", message=message)
            return
        slot.status.update(
            state={"running": {"startedAt": slot.started_at}},
            ready=False,  # an init container is ready once it succeeded
            started=True,
            containerID=slot.container_id,
            imageID=f"podrunner://{bin_dir}",
        )
        log.info(
            "pod %s: container %s: started pid %d: %s", task.ref, slot.name, slot.proc.pid, argv[:1]
        )
        if slot.sidecar or not slot.init:  # the API rejects probes on other init containers
            self._start_probes(task, slot)
            slot.status["started"], slot.status["ready"] = self._probed(slot)

    def _finish(
        self,
        task: PodTask,
        slot: Slot,
        code: int,
        may_restart: bool,
        reason: str = "",
        message: str = "",
    ) -> None:
        if slot.proc is not None:  # a container's processes all end with its first one
            _signal_group(slot.proc, signal.SIGKILL)
        slot.proc = None
        self._stop_probes(slot)
        killed_by, slot.killed_by, slot.kill_deadline = slot.killed_by, "", None
        self._close_log(slot)
        container = slot.container
        if not message and slot.term_file is not None:
            with contextlib.suppress(OSError), slot.term_file.open("rb") as file:
                message = file.read(MESSAGE_LIMIT).decode(errors="replace")
        if (
            not message
            and code != 0
            and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            restart = slot.status["restartCount"]
            message = _tail(task.dir / "logs" / slot.name / f"{restart}.log")
        terminated = {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "startedAt": slot.started_at or _now(),
            "finishedAt": _now(),
            "containerID": slot.container_id,
        }
        if message:
            terminated["message"] = message
        log.info("pod %s: container %s: exit %d", task.ref, slot.name, code)
        policy = task.restart_policy
        if slot.sidecar:
            restart = True
        elif slot.init:
            restart = code != 0 and policy != "Never"
        elif killed_by:  # kubelet restarts what a probe killed, whatever its exit code
            restart = policy != "Never"
        else:
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        slot.status.update(ready=slot.init and not slot.sidecar and code == 0, started=False)
        if not (may_restart and restart):
            slot.status["state"] = {"terminated": terminated}
            slot.done = True
            return
        delay = (
            0.0
            if slot.failures == 0
            else min(BACKOFF_MAX, self.restart_backoff * 2 ** (slot.failures - 1))
        )
        slot.failures += 1
        slot.next_start = time.monotonic() + delay
        slot.status["lastState"] = {"terminated": terminated}
        slot.status["restartCount"] += 1
        meta = task.pod["metadata"]
        slot.status["state"] = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:.0f}s restarting failed container={slot.name} "
                f"pod={meta['name']}_{meta['namespace']}({task.uid})",
            }
        }

    def _kill(self, task: PodTask, slots: list[Slot], grace: float, report: bool = True) -> None:
        """SIGTERM to each running container's process group, the grace period, SIGKILL."""
        running = [slot for slot in slots if slot.proc is not None]
        for slot in running:
            _signal_group(slot.proc, signal.SIGTERM)
        end = time.monotonic() + max(grace, MIN_GRACE if report else 0)
        while any(slot.proc.poll() is None for slot in running) and time.monotonic() < end:
            time.sleep(POLL)
        for slot in running:
            _signal_group(slot.proc, signal.SIGKILL)
            slot.proc.wait()
            if report:
                self._finish(task, slot, _exit_code(slot.proc.returncode), may_restart=False)
            else:
                slot.proc = None
                self._stop_probes(slot)
                self._close_log(slot)
        for slot in slots:
            slot.done = True

    # ------------------------------------------------------------------- probes

    def _start_probes(self, task: PodTask, slot: Slot) -> None:
        """One worker thread per probe of this container instance, as kubelet's."""
        slot.probes = {
            kind: Probe(kind, slot.container[f"{kind}Probe"])
            for kind in PROBE_KINDS
            if slot.container.get(f"{kind}Probe")
        }
        if not slot.probes:
            return
        slot.probe_stop = threading.Event()
        since = time.monotonic()
        for probe in slot.probes.values():
            thread = threading.Thread(
                target=self._probe_loop,
                args=(task, slot, probe, slot.probe_stop, since),
                name=f"probe-{task.ref}-{slot.name}-{probe.kind}",
                daemon=True,
            )
            thread.start()

    @staticmethod
    def _stop_probes(slot: Slot) -> None:
        if slot.probe_stop is not None:
            slot.probe_stop.set()
            slot.probe_stop = None

    @staticmethod
    def _probed(slot: Slot) -> tuple[bool, bool]:
        """(started, ready) of a running container from its probes' results."""
        startup, readiness = slot.probes.get("startup"), slot.probes.get("readiness")
        started = startup is None or startup.result is True
        return started, started and (readiness is None or readiness.result is True)

    def _probe_loop(
        self, task: PodTask, slot: Slot, probe: Probe, stop: threading.Event, since: float
    ) -> None:
        """kubelet's probe worker: the first probe initialDelaySeconds after the
        container started, then one every periodSeconds; liveness and readiness
        wait for the startup probe to succeed; a startup probe stops once it has,
        and a failed liveness or startup probe stops (the container is killed)."""
        spec = probe.spec
        period = max(1, int(spec.get("periodSeconds") or 10))
        due = since + int(spec.get("initialDelaySeconds") or 0)
        startup = slot.probes.get("startup")
        while not stop.wait(max(0.0, due - time.monotonic())):
            due = max(due + period, time.monotonic())  # a slow probe skips ticks
            if probe.kind != "startup" and startup is not None and startup.result is not True:
                continue
            try:
                ok, message = self._probe_once(task, slot, spec)
            except Exception as err:  # a bad spec (unknown port name, ...) is a failure
                ok, message = False, str(err)
            if stop.is_set():
                return  # the container ended meanwhile: the result is about no one
            if probe.record(ok, message):
                log.info(
                    "pod %s: container %s: %s probe %s%s",
                    task.ref,
                    slot.name,
                    probe.kind,
                    "succeeded" if ok else "failed: ",
                    "" if ok else message,
                )
            if probe.result is False and probe.kind != "readiness":
                return
            if probe.result is True and probe.kind == "startup":
                return

    def _probe_once(self, task: PodTask, slot: Slot, spec: dict[str, Any]) -> tuple[bool, str]:
        timeout = float(max(1, int(spec.get("timeoutSeconds") or 1)))
        if "exec" in spec:
            argv = [expand(part, slot.pod_env) for part in spec["exec"].get("command") or []]
            return exec_probe(argv, slot.env, slot.cwd or task.dir, timeout)
        for kind in ("httpGet", "tcpSocket"):
            if kind in spec:
                action = spec[kind]
                host = action.get("host") or task.ip
                port = self._probe_port(slot.container, action["port"])
                if kind == "tcpSocket":
                    return tcp_probe(host, port, timeout)
                version = ".".join(self._kubelet_version.lstrip("v").split(".")[:2])
                return http_probe(host, port, action, timeout, f"kube-probe/{version}")
        return False, f"the pod runner cannot run this probe: {sorted(spec)}"

    @staticmethod
    def _probe_port(container: dict[str, Any], port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for declared in container.get("ports") or []:
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise ValueError(f"port {port!r} is not a port of container {container['name']}")

    def _apply_probes(self, task: PodTask, slot: Slot) -> bool:
        """What kubelet's pod sync does with the probe results of a running container:
        Started and ready follow them; a failed liveness or startup probe kills it
        (SIGTERM, the grace period, SIGKILL) without holding up the pod's other
        containers. True when the container status changed."""
        if slot.init and not slot.sidecar:
            return False
        if slot.killed_by:
            if slot.kill_deadline is not None and time.monotonic() >= slot.kill_deadline:
                _signal_group(slot.proc, signal.SIGKILL)
                slot.kill_deadline = None
            return False
        failed = next(
            (p for p in slot.probes.values() if p.kind != "readiness" and p.result is False), None
        )
        if failed is None:
            started, ready = self._probed(slot)
        else:
            grace = failed.spec.get("terminationGracePeriodSeconds")
            if grace is None:
                grace = task.pod["spec"].get("terminationGracePeriodSeconds", 30)
            outcome = "killed" if task.restart_policy == "Never" else "restarted"
            log.info(
                "pod %s: container %s failed %s probe (%s), will be %s",
                task.ref,
                slot.name,
                failed.kind,
                failed.message,
                outcome,
            )
            self._stop_probes(slot)
            slot.killed_by = failed.kind
            slot.kill_deadline = time.monotonic() + max(float(grace), MIN_GRACE)
            _signal_group(slot.proc, signal.SIGTERM)
            started, ready = slot.status["started"], False  # no traffic while it stops
        if (started, ready) == (slot.status["started"], slot.status["ready"]):
            return False
        slot.status.update(started=started, ready=ready)
        return True

    @staticmethod
    def _close_log(slot: Slot) -> None:
        if slot.log_file is not None:
            slot.log_file.close()
            slot.log_file = None

    # -------------------------------------------------------------- environment

    def _lookup(self, plural: str, namespace: str, name: str, cache: dict) -> dict | None:
        key = (plural, name)
        if key not in cache:
            cache[key] = self.api.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}", True)
        return cache[key]

    def _source_data(
        self, plural: str, namespace: str, name: str, optional: bool, cache: dict
    ) -> dict[str, str] | None:
        """A ConfigMap's data or a Secret's decoded data; None if missing and optional."""
        obj = self._lookup(plural, namespace, name, cache)
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{plural} "{name}" not found')
        if plural == "secrets":
            return {
                key: base64.b64decode(value).decode(errors="surrogateescape")
                for key, value in (obj.get("data") or {}).items()
            }
        return dict(obj.get("data") or {})

    def _container_env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        """kubelet's makeEnvironmentVariables: envFrom, then env (which may refer back)."""
        namespace = pod["metadata"]["namespace"]
        cache: dict = {}
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            ref = source.get("configMapRef") or source.get("secretRef")
            plural = "configmaps" if "configMapRef" in source else "secrets"
            data = self._source_data(
                plural, namespace, ref["name"], bool(ref.get("optional")), cache
            )
            for key, value in (data or {}).items():
                env[source.get("prefix", "") + key] = value
        for var in container.get("env") or []:
            value = var.get("value") or ""
            source = var.get("valueFrom")
            if value:
                value = expand(value, env)
            elif source:
                found = self._env_source(pod, container, source, cache)
                if found is None:
                    continue  # optional and missing
                value = found
            env[var["name"]] = value
        return env

    def _env_source(self, pod, container, source: dict, cache: dict) -> str | None:
        namespace = pod["metadata"]["namespace"]
        if "fieldRef" in source:
            return self._field(pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            return self._resource(container, source["resourceFieldRef"])
        for key_ref, plural, kind in (
            ("configMapKeyRef", "configmaps", "ConfigMap"),
            ("secretKeyRef", "secrets", "Secret"),
        ):
            if key_ref in source:
                ref = source[key_ref]
                optional = bool(ref.get("optional"))
                data = self._source_data(plural, namespace, ref["name"], optional, cache)
                if data is None:
                    return None
                if ref["key"] not in data:
                    if optional:
                        return None
                    raise ConfigError(
                        f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
                    )
                return data[ref["key"]]
        raise ConfigError(f"unsupported env source: {sorted(source)}")

    def _field(self, pod: dict[str, Any], path: str) -> str:
        meta = pod["metadata"]
        pod_ip = HOST_IP if pod["spec"].get("hostNetwork") else self._ips.get(meta["uid"]) or ""
        keyed = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if keyed:
            return (meta.get(keyed[1]) or {}).get(keyed[2], "")
        values = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.node_name,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": HOST_IP,
            "status.hostIPs": HOST_IP,
            "status.podIP": pod_ip,
            "status.podIPs": pod_ip,  # kubelet joins them with commas; a pod has one
        }
        if path not in values:
            raise ConfigError(f"unsupported fieldRef {path!r}")
        return values[path]

    @staticmethod
    def _resource(container: dict[str, Any], ref: dict[str, Any]) -> str:
        kind, _, resource = ref["resource"].partition(".")
        resources = container.get("resources") or {}
        value = (resources.get(kind) or {}).get(resource)
        if value is None:  # no limit: the node's allocatable, as kubelet reports
            value = NODE_RESOURCES.get(resource, "0") if kind == "limits" else "0"
        divisor = quantity(ref.get("divisor") or "1")
        return str(math.ceil(quantity(value) / divisor - 1e-9))

    # ------------------------------------------------------------------ volumes

    def _prepare_volumes(self, task: PodTask) -> dict[str, Path]:
        pod = task.pod
        namespace = pod["metadata"]["namespace"]
        cache: dict = {}
        volumes = {}
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            local = task.dir / "volumes" / name
            if "emptyDir" in volume:
                local.mkdir(parents=True, exist_ok=True)
            elif "hostPath" in volume:
                local = Path(volume["hostPath"]["path"])
                if volume["hostPath"].get("type") == "DirectoryOrCreate":
                    local.mkdir(parents=True, exist_ok=True)
            elif "persistentVolumeClaim" in volume:
                local = self._claim_path(namespace, volume["persistentVolumeClaim"]["claimName"])
            elif kinds := {"configMap", "secret", "projected", "downwardAPI"} & set(volume):
                local.mkdir(parents=True, exist_ok=True)
                kind = kinds.pop()
                sources = (
                    volume[kind].get("sources", [])
                    if kind == "projected"
                    else [{kind: volume[kind]}]
                )
                for source in sources:
                    self._materialise(task, source, local, cache)
            else:
                kinds = sorted(set(volume) - {"name"})
                raise VolumeError(f"volume {name!r}: the pod runner cannot provide {kinds}", False)
            volumes[name] = local
        return volumes

    def _claim_path(self, namespace: str, claim: str) -> Path:
        pvc = self.api.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}", True)
        if not pvc or (pvc.get("status") or {}).get("phase") != "Bound":
            raise VolumeError(f'persistentvolumeclaim "{claim}" not found or not bound', True)
        pv = self.api.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
        spec = pv["spec"]
        path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        if not path:
            raise VolumeError(f"volume of claim {claim!r} is neither hostPath nor local", False)
        return Path(path)

    def _materialise(self, task: PodTask, source: dict, target: Path, cache: dict) -> None:
        """Files of a configMap, secret, downwardAPI or serviceAccountToken source."""
        pod = task.pod
        namespace = pod["metadata"]["namespace"]
        files: dict[str, bytes] = {}
        if "serviceAccountToken" in source:
            spec = source["serviceAccountToken"]
            request = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [spec["audience"]] if spec.get("audience") else [],
                    "expirationSeconds": spec.get("expirationSeconds", 3600),
                },
            }
            account = pod["spec"].get("serviceAccountName") or "default"
            path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
            token = self.api.request("POST", path, request)["status"]["token"]
            files[spec["path"]] = token.encode()
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    value = self._field(pod, item["fieldRef"]["fieldPath"])
                else:
                    value = ""
                files[item["path"]] = value.encode()
        else:
            kind = "configMap" if "configMap" in source else "secret"
            ref = source[kind]
            name = ref.get("name") or ref.get("secretName")
            plural = "configmaps" if kind == "configMap" else "secrets"
            obj = self._lookup(plural, namespace, name, cache)
            if obj is None:
                if ref.get("optional"):
                    return
                raise VolumeError(f'{plural} "{name}" not found', True)
            if kind == "configMap":
                data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
                binary = obj.get("binaryData") or {}
            else:
                data, binary = {}, obj.get("data") or {}
            data.update({k: base64.b64decode(v) for k, v in binary.items()})
            items = ref.get("items")
            if items:
                for item in items:
                    if item["key"] in data:
                        files[item["path"]] = data[item["key"]]
                    elif not ref.get("optional"):
                        raise VolumeError(f"key {item['key']} not in {kind} {name}", True)
            else:
                files = data
        for relative, content in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)

    def _mounts(self, task: PodTask, container: dict[str, Any]) -> dict[str, Path]:
        mounts = {}
        for mount in container.get("volumeMounts") or []:
            local = task.volumes.get(mount["name"])
            if local is not None:
                sub = mount.get("subPath")
                if sub:
                    local = local / sub
                    local.mkdir(parents=True, exist_ok=True)
                mounts[mount["mountPath"]] = local
        return mounts

    @staticmethod
    def _working_dir(task: PodTask, container: dict, mounts: dict[str, Path]) -> Path | None:
        wanted = container.get("workingDir")
        if not wanted:
            return None
        for path in sorted(mounts, key=len, reverse=True):
            if wanted == path or wanted.startswith(path.rstrip("/") + "/"):
                return mounts[path] / wanted[len(path) :].lstrip("/")
        if Path(wanted).is_dir():
            return Path(wanted)
        local = task.dir / "rootfs" / wanted.lstrip("/")
        local.mkdir(parents=True, exist_ok=True)
        return local

    # ------------------------------------------------------------------- status

    def _phase(self, task: PodTask, terminal: bool = False) -> str:
        """kubelet's getPhase; like kubelet, never terminal while a process still runs
        (sidecars being stopped)."""
        phase = self._container_phase(task, terminal)
        if phase in TERMINAL and any(slot.proc for slot in task.slots or []):
            return "Running"
        return phase

    def _container_phase(self, task: PodTask, terminal: bool) -> str:
        policy = task.restart_policy
        pending_init = failed_init = 0
        for slot in task.init_slots():
            if slot.sidecar:
                continue
            state, last = slot.status["state"], slot.status.get("lastState") or {}
            if "running" in state:
                pending_init += 1
            elif "terminated" in state:
                failed_init += state["terminated"]["exitCode"] != 0
            elif "terminated" in last:
                failed_init += last["terminated"]["exitCode"] != 0
            else:
                pending_init += 1
        running = waiting = stopped = succeeded = 0
        for slot in task.main_slots():
            state, last = slot.status["state"], slot.status.get("lastState") or {}
            if "running" in state:
                running += 1
            elif "terminated" in state:
                stopped += 1
                succeeded += state["terminated"]["exitCode"] == 0
            elif "terminated" in last:
                stopped += 1
            else:
                waiting += 1
        if failed_init and policy == "Never":
            return "Failed"
        if (pending_init and not (running or stopped)) or waiting:
            return "Pending"
        if running:
            return "Running"
        if stopped:
            if terminal or policy == "Never":
                return "Succeeded" if stopped == succeeded else "Failed"
            if policy == "Always":
                return "Running"
            return "Succeeded" if stopped == succeeded else "Running"
        return "Pending"

    def _condition(
        self, task: PodTask, kind: str, status: str, reason: str | None = None, message=None
    ) -> dict[str, str | None]:
        previous = task.conditions.get(kind)
        since = previous[1] if previous and previous[0] == status else _now()
        task.conditions[kind] = (status, since)
        # None removes what an earlier patch set (the patch merges conditions by type).
        return {"type": kind, "status": status, "lastTransitionTime": since,
                "reason": reason, "message": message}  # fmt: skip

    def _push(
        self, task: PodTask, phase: str | None = None, reason: str = "", message: str = ""
    ) -> None:
        """Write the pod status as kubelet's status manager does (strategic merge patch)."""
        if self._halt.is_set() or task.terminal or task.gone or task.slots is None:
            return
        phase = phase or self._phase(task)
        init_pending = [
            s.name for s in task.init_slots() if not s.sidecar and s.exit_code() != 0
        ] + [s.name for s in task.init_slots() if s.sidecar and "running" not in s.status["state"]]
        # Sidecars count, as kubelet counts restartable init containers.
        unready = [
            s.name
            for s in task.init_slots() + task.main_slots()
            if (s.sidecar or not s.init) and not s.status.get("ready")
        ]
        conditions = [self._condition(task, "PodReadyToStartContainers", "True")]
        if init_pending and phase not in TERMINAL:
            conditions.append(
                self._condition(
                    task,
                    "Initialized",
                    "False",
                    reason="ContainersNotInitialized",
                    message=f"containers with incomplete status: [{' '.join(init_pending)}]",
                )
            )
        else:
            conditions.append(self._condition(task, "Initialized", "True"))
        for kind in ("ContainersReady", "Ready"):
            if phase == "Succeeded":
                conditions.append(self._condition(task, kind, "False", reason="PodCompleted"))
            elif unready or phase == "Failed":
                names = " ".join(unready or [s.name for s in task.main_slots()])
                conditions.append(
                    self._condition(
                        task,
                        kind,
                        "False",
                        reason="ContainersNotReady",
                        message=f"containers with unready status: [{names}]",
                    )
                )
            else:
                conditions.append(self._condition(task, kind, "True"))
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conditions,
            "startTime": task.start_time,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "containerStatuses": [s.status for s in task.main_slots()],
        }
        if task.ip:  # a lost pod keeps the IP an earlier runner gave it
            status.update(podIP=task.ip, podIPs=[{"ip": task.ip}])
        if task.init_slots():
            status["initContainerStatuses"] = [s.status for s in task.init_slots()]
        if reason:
            status.update(reason=reason, message=message)
        meta = task.pod["metadata"]
        body = {"metadata": {"uid": task.uid}, "status": status}
        text = json.dumps(body, sort_keys=True)
        if text == task.pushed:  # unchanged: probes of many pods must not hammer the apiserver
            return
        try:
            self.api.request(
                "PATCH",
                pod_path(meta["namespace"], meta["name"], "/status"),
                body,
                content_type=STRATEGIC,
            )
        except ApiException as err:
            if err.status == 404:
                task.gone = True
                return
            log.warning("pod %s: status update failed: %s %s", task.ref, err.status, err.body)
            return
        task.pushed = text
        if phase in TERMINAL:
            task.terminal = True
            log.info("pod %s: %s", task.ref, phase)


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


# ------------------------------------------------------------------ for the tests


def serving_instance(kubeconfig: str | Path, node_name: str = NODE_NAME) -> str | None:
    """The instance id of a live runner serving `node_name` (lease renewed within
    the lease duration and not released), else None."""
    api = Api(kubeconfig)
    try:
        node = api.get(f"/api/v1/nodes/{node_name}", missing_ok=True)
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{node_name}"
        lease = api.get(path, missing_ok=True)
    finally:
        api.close()
    instance = ((node or {}).get("metadata", {}).get("annotations") or {}).get(INSTANCE_ANNOTATION)
    renewed = ((lease or {}).get("spec") or {}).get("renewTime")
    if instance and renewed and time.time() - _epoch(renewed) < LEASE_SECONDS / 2:
        return instance
    return None


def pod_logs(pod: Any) -> str:
    """Every container log of a pod (dict or kubernetes client model) run by a runner
    on this machine, for a test to show when it fails."""
    meta = pod["metadata"] if isinstance(pod, dict) else pod.metadata
    annotations = (meta.get("annotations") if isinstance(meta, dict) else meta.annotations) or {}
    logs = annotations.get(LOG_ANNOTATION)
    if not logs or not Path(logs).is_dir():
        return "(no runner logs)"
    parts = []
    for path in sorted(Path(logs).glob("*/*.log")):
        parts.append(f"--- {path}\n{path.read_text(errors='replace')}")
    return "\n".join(parts) or "(empty)"


# --------------------------------------------------------------------------- CLI


def _image_map(pairs: list[str]) -> dict[str, Path]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise argparse.ArgumentTypeError(f"--image-map wants NAME=DIR, not {pair!r}")
        result[key] = Path(value).absolute()
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), required=False)
    parser.add_argument(
        "--image-map",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="images whose repository ends in NAME run with DIR first on PATH",
    )
    parser.add_argument(
        "--work-dir", default=None, help="pod directories and runner.log (default: a new temp dir)"
    )
    parser.add_argument("--node-name", default=NODE_NAME)
    parser.add_argument(
        "--max-pods", type=int, default=MAX_PODS, help="pods run at once; more wait in order"
    )
    args = parser.parse_args(argv)
    if not args.kubeconfig:
        parser.error("--kubeconfig (or KUBECONFIG) is required")
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="podrunner-"))
    logging.basicConfig(level=logging.INFO, format="podrunner: %(levelname)s %(message)s")
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    serving = serving_instance(args.kubeconfig, args.node_name)
    if serving:
        parser.error(f"runner {serving} already serves node {args.node_name}")
    runner = PodRunner(
        args.kubeconfig,
        _image_map(args.image_map),
        work_dir,
        node_name=args.node_name,
        max_pods=args.max_pods,
    )
    runner.start()
    print(f"podrunner: serving {args.node_name}; log {runner.log_path}", file=sys.stderr)
    try:
        done.wait()
    finally:
        runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
