#!/usr/bin/env python3
"""Start and stop a real local Kubernetes control plane for the tests.

    python tests/cluster/controlplane.py up|down|status|env

`up` builds the binaries (tests/cluster/build.sh, a no-op once built), then runs
etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as
detached daemons on free 127.0.0.1 ports, and prints the kubeconfig path.
kwok plays the kubelet of one fake node, `kwok-node-0`, so Pods, Jobs and
Deployments go through their whole life without a container runtime. That node
is tainted `kwok.x-k8s.io/node=fake:NoSchedule`: only pods that tolerate it (and
select it) get kwok's invented results; every other pod waits for a node whose
kubelet runs it for real (`runner-0`, tests/cluster/podrunner.py).

`ControlPlane(node_address=IP)` is the variant for a real node
(tests/node/node.py): no kwok, and the apiserver listens on every address and
advertises IP, so pods reach it through the `kubernetes` Service; it also gets
a client certificate for the kubelets' API (logs, exec).

The cluster is secured like a real one: TLS with client certificates for every
client (only etcd's single-member peer port and metrics port, both loopback, are
plain HTTP), Node+RBAC authorization, service-account tokens signed by a
generated RSA key, PodSecurity admission.

Only the standard library is used, so the CLI runs with any python3.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
NODE_NAME = "kwok-node-0"
# kwok manages only nodes carrying this annotation; any other node (and its
# pods) is left alone for whoever plays its kubelet.
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# Virtual only on the kwok control plane: nothing routes or dials it (the
# real node routes it to its bridge, so keep it clear of the host's networks).
# 254 addresses; the operator benchmark at N = 1,000 InferenceServices needs
# 2,000 and sets FLYWHEEL_SERVICE_CIDR=10.0.0.0/16 for its own control plane.
SERVICE_CIDR = os.environ.get("FLYWHEEL_SERVICE_CIDR", "10.0.0.0/24")
UP_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0


def pinned_versions() -> dict[str, str]:
    """KEY=VALUE pairs of versions.env, the single place the versions are written."""
    pins = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            pins[key.strip()] = value.strip()
    return pins


def log(message: str) -> None:
    # stdout carries only the kubeconfig path, for `$(controlplane.py up)`.
    print(f"controlplane: {message}", file=sys.stderr, flush=True)


def run_kubectl(
    kubeconfig: Path, *args: str, check: bool = True, input: str | None = None, kubectl: str = ""
) -> subprocess.CompletedProcess:
    cmd = [kubectl or shutil.which("kubectl") or "kubectl", f"--kubeconfig={kubeconfig}", *args]
    return subprocess.run(cmd, check=check, input=input, capture_output=True, text=True)


# --------------------------------------------------------------------------- PKI


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _new_key(path: Path, rsa: bool = False) -> None:
    # ECDSA P-256 for TLS: generated in milliseconds, where RSA takes seconds.
    algo = ["RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    if not rsa:
        algo = ["EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    _openssl("genpkey", "-algorithm", *algo, "-out", str(path))
    path.chmod(0o600)


def _new_ca(pki: Path, name: str) -> None:
    _new_key(pki / f"{name}.key")
    _openssl(
        "req", "-x509", "-new", "-key", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.crt"),
        "-days", "3650", "-subj", f"/CN=flywheel-{name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def _new_cert(pki: Path, ca: str, name: str, subject: str, usage: str, sans: str = "") -> None:
    """A leaf certificate `name.crt`/`name.key` signed by CA `ca`."""
    key, csr = pki / f"{name}.key", pki / f"{name}.csr"
    _new_key(key)
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", subject)
    ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    ext += f"extendedKeyUsage={usage}\n" + (f"subjectAltName={sans}\n" if sans else "")
    with tempfile.NamedTemporaryFile("w", suffix=".ext") as extfile:
        extfile.write(ext)
        extfile.flush()
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(pki / f"{ca}.crt"),
            "-CAkey", str(pki / f"{ca}.key"), "-CAcreateserial", "-days", "365",
            "-extfile", extfile.name, "-out", str(pki / f"{name}.crt"),
        )  # fmt: skip
    csr.unlink()


# Client identities: (file name, subject). The built-in RBAC roles know the
# controller-manager and scheduler by these user names.
CLIENTS = {
    "admin": "/O=system:masters/CN=flywheel-admin",
    "controller-manager": "/CN=system:kube-controller-manager",
    "scheduler": "/CN=system:kube-scheduler",
    "kwok": "/CN=kwok-controller",
}
APISERVER_SANS = ",".join(
    ["IP:127.0.0.1", "IP:10.0.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
     "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local"]
)  # fmt: skip


# Bump when ensure_pki changes what it makes, so existing state dirs regenerate.
PKI_LAYOUT = "3"


def ensure_pki(pki: Path, extra_sans: str = "") -> None:
    """Generate all certificates and keys once; they do not depend on the ports.
    `extra_sans` (e.g. "IP:10.244.0.1") are more names for the apiserver."""
    done = pki / "done"
    layout = f"{PKI_LAYOUT} {extra_sans}".strip()
    if done.exists() and done.read_text() == layout:
        return
    shutil.rmtree(pki, ignore_errors=True)
    pki.mkdir(parents=True)
    log("generating certificates")
    _new_ca(pki, "ca")
    # etcd has its own CA, so a certificate for the API is never a key to etcd.
    _new_ca(pki, "etcd-ca")
    # etcd's own gRPC gateway dials etcd with the server certificate: it needs clientAuth too.
    etcd_sans = "IP:127.0.0.1,DNS:localhost"
    _new_cert(pki, "etcd-ca", "etcd-server", "/CN=etcd", "serverAuth,clientAuth", etcd_sans)
    _new_cert(pki, "etcd-ca", "apiserver-etcd-client", "/CN=kube-apiserver", "clientAuth")
    sans = ",".join(filter(None, [APISERVER_SANS, extra_sans]))
    _new_cert(pki, "ca", "apiserver", "/CN=kube-apiserver", "serverAuth", sans)
    for name, subject in CLIENTS.items():
        _new_cert(pki, "ca", name, subject, "clientAuth")
    # The aggregation layer's CA, as kubeadm makes it: the controller-manager and
    # scheduler read it to authenticate requests proxied by the apiserver.
    _new_ca(pki, "front-proxy-ca")
    _new_cert(pki, "front-proxy-ca", "front-proxy-client", "/CN=front-proxy-client", "clientAuth")
    # What the apiserver shows a real kubelet (logs, exec); kubelets authorize
    # it by webhook, and system:masters may do anything.
    kubelet_client = "/O=system:masters/CN=kube-apiserver-kubelet-client"
    _new_cert(pki, "ca", "apiserver-kubelet-client", kubelet_client, "clientAuth")
    _new_key(pki / "sa.key", rsa=True)  # service-account tokens are signed RS256
    _openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    done.write_text(layout)


# --------------------------------------------------------------------- processes


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all sockets stay bound until all are chosen."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _alive(pid: int) -> bool:
    try:  # reap it if it is our own child, or it lingers as a zombie
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _read_pid(pidfile: Path, binary: Path) -> int | None:
    """The pid in `pidfile` if that process is still `binary` (pids get reused)."""
    try:
        pid = int(pidfile.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (OSError, ValueError):
        return None
    return pid if cmdline.decode() == str(binary) and _alive(pid) else None


class StartupError(RuntimeError):
    pass


class ControlPlane:
    def __init__(
        self,
        state_dir: Path | None = None,
        bin_dir: Path | None = None,
        node_address: str | None = None,
    ):
        default_state = os.environ.get("FLYWHEEL_CLUSTER_DIR") or REPO / ".cache" / "cluster"
        self.state_dir = Path(state_dir or default_state).resolve()
        cache = Path(os.environ.get("FLYWHEEL_CACHE") or REPO / ".cache")
        self.bin_dir = Path(bin_dir or cache / "bin").resolve()
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.pki = self.state_dir / "pki"
        self.ports: dict[str, int] = {}
        # A real node's pods reach the apiserver at node_address (a host address
        # on their network), not at loopback, which is their own; kwok's fake
        # node would only compete with the real one for pods.
        self.node_address = node_address
        self.components = tuple(c for c in COMPONENTS if not (node_address and c == "kwok"))

    # ---------------------------------------------------------------- public

    def kubectl(self, *args: str, check: bool = True, input: str | None = None):
        return run_kubectl(
            self.kubeconfig, *args, check=check, input=input, kubectl=str(self.bin_dir / "kubectl")
        )

    def is_running(self) -> bool:
        """All five components run and the apiserver answers ready."""
        if not all(self._pid(c) for c in self.components):
            return False
        self._load_ports()
        return self._get("/readyz") is not None

    def running(self) -> dict[str, int | None]:
        return {c: self._pid(c) for c in self.components}

    def start(self) -> Path:
        """Bring the cluster up (or find it up) and return the kubeconfig path."""
        self.build()
        with self._lock("start.lock"):  # two sessions starting at once would clobber pid files
            if self.is_running():
                log(f"already running ({self.state_dir})")
            else:
                self._stop()  # whatever half of a cluster is left, start clean
                try:
                    self._start()
                except BaseException:
                    self._stop()  # leave no daemons behind; the logs stay for reading
                    raise
        return self.kubeconfig

    def stop(self) -> None:
        """Stop every component (last started first) and drop the etcd data."""
        with self._lock("start.lock"):
            self._stop()

    def restart(self, *components: str, timeout: float = UP_TIMEOUT) -> None:
        """Stop `components` (etcd, kube-apiserver, ...) and start them again on
        the same ports, keeping etcd's data: what a node reboot or a control-
        plane upgrade does to clients. Returns once the apiserver is ready."""
        unknown = set(components) - set(RESTARTABLE)
        if unknown:
            raise ValueError(f"cannot restart {sorted(unknown)}; only {list(RESTARTABLE)}")
        with self._lock("start.lock"):
            self._load_ports()
            ordered = [c for c in COMPONENTS if c in components]
            for component in reversed(ordered):
                pid = self._pid(component)
                if pid:
                    log(f"stopping {component} (pid {pid}) for a restart")
                    _terminate(pid)
                # Gone, not crashed: _wait would take a stale pid file for an exit.
                (self.state_dir / f"{component}.pid").unlink(missing_ok=True)
            deadline = time.monotonic() + timeout
            for component in ordered:
                RESTARTABLE[component](self)
                if component == "etcd":
                    self._wait("etcd", deadline, self._etcd_healthy)
            try:
                self._wait("kube-apiserver", deadline, lambda: self._get("/readyz") is not None)
            except StartupError as err:
                raise StartupError(f"{err}\n/readyz?verbose:\n{self._readiness()}") from None

    def _readiness(self) -> str:
        """The apiserver's own account of which readiness checks fail."""
        url = f"https://127.0.0.1:{self.ports['kube-apiserver']}/readyz?verbose"
        try:
            with urllib.request.urlopen(url, context=self._tls(), timeout=30) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.read().decode()
        except OSError as err:
            return f"unreachable: {err}"

    @contextlib.contextmanager
    def claimed(self):
        """Mark the cluster as in use by this test session while the block runs."""
        with self._lock("users.lock", fcntl.LOCK_SH):
            yield self

    def stop_unless_claimed(self) -> bool:
        """Stop the cluster unless another test session still claims it."""
        with self._lock("users.lock", fcntl.LOCK_EX | fcntl.LOCK_NB) as held:
            if held:
                self.stop()
            else:
                log("another test session still uses the cluster: left running")
            return held

    def client_kubeconfig(self, name: str, subject: str, path: Path) -> Path:
        """Write a kubeconfig for a new client `name` (certificate subject
        `subject`, e.g. "/O=system:nodes/CN=system:node:node-0") signed by the
        cluster CA; the certificate is made once and kept in the PKI dir."""
        self._load_ports()
        if not (self.pki / f"{name}.crt").exists():
            _new_cert(self.pki, "ca", name, subject, "clientAuth")
        server = f"https://127.0.0.1:{self.ports['kube-apiserver']}"
        path.write_text(json.dumps(self._kubeconfig_for(name, server), indent=2) + "\n")
        path.chmod(0o600)
        return path

    def build(self) -> None:
        # build.sh prints progress; keep our stdout for the kubeconfig path.
        subprocess.run(["bash", str(HERE / "build.sh")], check=True, stdout=sys.stderr)

    # ----------------------------------------------------------- components

    @contextlib.contextmanager
    def _lock(self, name: str, how: int = fcntl.LOCK_EX):
        """flock on a file in the state dir; yields False if LOCK_NB could not get it."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / name).open("a") as file:
            try:
                fcntl.flock(file, how)
            except BlockingIOError:
                yield False
                return
            yield True

    def _start(self) -> None:
        begin = time.monotonic()
        deadline = begin + UP_TIMEOUT
        ensure_pki(self.pki, f"IP:{self.node_address}" if self.node_address else "")
        self._choose_ports()
        self._write_kubeconfigs()
        self._start_etcd()
        self._wait("etcd", deadline, self._etcd_healthy)
        self._start_apiserver()
        self._wait("kube-apiserver", deadline, lambda: self._get("/readyz") is not None)
        self._bootstrap_objects()
        self._start_controller_manager()
        self._start_scheduler()
        if "kwok" in self.components:
            self._start_kwok()
        self._wait("kube-controller-manager", deadline, self._default_sa_exists)
        if "kwok" in self.components:
            self._wait("kwok", deadline, self._node_ready)
        log(f"up in {time.monotonic() - begin:.1f}s ({self.state_dir})")

    def _stop(self) -> None:
        for component in reversed(COMPONENTS):
            pid = self._pid(component)
            if pid:
                log(f"stopping {component} (pid {pid})")
                _terminate(pid)
            (self.state_dir / f"{component}.pid").unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "etcd-data", ignore_errors=True)

    def _binary(self, component: str) -> Path:
        return self.bin_dir / component

    def _pid(self, component: str) -> int | None:
        return _read_pid(self.state_dir / f"{component}.pid", self._binary(component))

    def _spawn(self, component: str, args: list[str], env: dict[str, str] | None = None) -> None:
        logfile = self.state_dir / f"{component}.log"
        with logfile.open("w") as out:
            # A new session detaches the daemon from the CLI and its terminal.
            proc = subprocess.Popen(
                [str(self._binary(component)), *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.state_dir, env={**os.environ, **(env or {})},
            )  # fmt: skip
        _CHILDREN[proc.pid] = proc  # keep it referenced, so Python reaps it quietly
        (self.state_dir / f"{component}.pid").write_text(str(proc.pid))

    def _start_etcd(self) -> None:
        pki, p = self.pki, self.ports
        client = f"https://127.0.0.1:{p['etcd']}"
        peer = f"http://127.0.0.1:{p['etcd-peer']}"  # one member: the peer port has no peer
        self._spawn("etcd", [
            "--name=default", f"--data-dir={self.state_dir / 'etcd-data'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            f"--listen-metrics-urls=http://127.0.0.1:{p['etcd-metrics']}",
            f"--cert-file={pki / 'etcd-server.crt'}", f"--key-file={pki / 'etcd-server.key'}",
            "--client-cert-auth", f"--trusted-ca-file={pki / 'etcd-ca.crt'}",
            # A throwaway test store: skipping fsync makes it much faster on slow disks.
            "--unsafe-no-fsync", "--log-level=warn",
        ])  # fmt: skip

    def _start_apiserver(self) -> None:
        pki, p = self.pki, self.ports
        self._spawn("kube-apiserver", [
            *self._apiserver_address_args(),
            f"--secure-port={p['kube-apiserver']}", f"--cert-dir={self.state_dir / 'apiserver'}",
            f"--etcd-servers=https://127.0.0.1:{p['etcd']}",
            f"--etcd-cafile={pki / 'etcd-ca.crt'}",
            f"--etcd-certfile={pki / 'apiserver-etcd-client.crt'}",
            f"--etcd-keyfile={pki / 'apiserver-etcd-client.key'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            # As kubeadm: privileged pods are possible, PodSecurity decides per namespace.
            "--allow-privileged=true",
        ])  # fmt: skip

    def _apiserver_address_args(self) -> list[str]:
        if not self.node_address:
            return [
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                # The `kubernetes` Service cannot have a loopback endpoint (validation
                # forbids it); without this the apiserver logs that error every 10s.
                "--endpoint-reconciler-type=none",
            ]  # fmt: skip
        pki = self.pki
        return [
            # Every address: clients on the host keep 127.0.0.1, pods dial
            # node_address, which the `kubernetes` Service's endpoint names.
            "--bind-address=0.0.0.0", f"--advertise-address={self.node_address}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            # Node names resolve nowhere here: dial kubelets at their node IP.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
        ]  # fmt: skip

    def _component_auth(self, name: str) -> list[str]:
        kubeconfig = self.state_dir / f"{name}.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",  # one replica; saves lease traffic and start-up delay
        ]

    def _start_controller_manager(self) -> None:
        pki = self.pki
        self._spawn("kube-controller-manager", [
            *self._component_auth("controller-manager"),
            f"--secure-port={self.ports['kube-controller-manager']}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
        ])  # fmt: skip

    def _start_scheduler(self) -> None:
        self._spawn("kube-scheduler", [
            *self._component_auth("scheduler"),
            f"--secure-port={self.ports['kube-scheduler']}",
        ])  # fmt: skip

    def _start_kwok(self) -> None:
        key, value = KWOK_ANNOTATION
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.state_dir / 'kwok.kubeconfig'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                # The apiserver dials a node's address for logs/exec: keep it on loopback.
                "--node-ip=127.0.0.1",
            ],
            # kwok also reads ~/.kwok/kwok.yaml; a private work dir keeps its default stages.
            env={"KWOK_WORKDIR": str(self.state_dir / "kwok")},
        )

    # ------------------------------------------------------------ config

    def _choose_ports(self) -> None:
        names = ("etcd", "etcd-peer", "etcd-metrics", "kube-apiserver",
                 "kube-controller-manager", "kube-scheduler")  # fmt: skip
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        (self.state_dir / "ports.json").write_text(json.dumps(self.ports, indent=2) + "\n")

    def _load_ports(self) -> None:
        if not self.ports:
            self.ports = json.loads((self.state_dir / "ports.json").read_text())

    def _write_kubeconfigs(self) -> None:
        server = f"https://127.0.0.1:{self.ports['kube-apiserver']}"
        for name in CLIENTS:
            path = self.kubeconfig if name == "admin" else self.state_dir / f"{name}.kubeconfig"
            path.write_text(json.dumps(self._kubeconfig_for(name, server), indent=2) + "\n")
            path.chmod(0o600)

    def _kubeconfig_for(self, name: str, server: str) -> dict:
        def b64(file: str) -> str:
            return base64.b64encode((self.pki / file).read_bytes()).decode()

        # Embedded data, so the file still works when copied or mounted elsewhere.
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "flywheel", "cluster": {
                "server": server, "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": name, "user": {
                "client-certificate-data": b64(f"{name}.crt"),
                "client-key-data": b64(f"{name}.key")}}],
            "contexts": [{"name": "flywheel", "context": {"cluster": "flywheel", "user": name}}],
            "current-context": "flywheel",
        }  # fmt: skip

    def _bootstrap_objects(self) -> None:
        """RBAC for kwok (a plain user, not a master) and the fake node."""
        if "kwok" in self.components:
            self.kubectl("apply", "-f", "-", input=json.dumps(_kwok_rbac()))
            self.kubectl("create", "-f", "-", input=json.dumps(_kwok_node()))

    # ------------------------------------------------------------ health

    def _tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _get(self, path: str) -> dict | str | None:
        """GET from the apiserver as admin; None unless it answers 200."""
        try:
            url = f"https://127.0.0.1:{self.ports['kube-apiserver']}{path}"
            with urllib.request.urlopen(url, context=self._tls(), timeout=5) as resp:
                body = resp.read().decode()
        except (OSError, urllib.error.URLError, KeyError):
            return None
        return json.loads(body) if body.startswith("{") else body

    def _etcd_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['etcd-metrics']}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def _default_sa_exists(self) -> bool:
        return self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None

    def _node_ready(self) -> bool:
        node = self._get(f"/api/v1/nodes/{NODE_NAME}")
        conditions = node.get("status", {}).get("conditions", []) if node else []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _wait(self, component: str, deadline: float, ready: Callable[[], bool]) -> None:
        while not ready():
            dead = [c for c in self.components if self._exited(c)]
            if dead or time.monotonic() > deadline:
                culprit = dead[0] if dead else component
                why = "exited" if dead else f"not ready within {UP_TIMEOUT:.0f}s"
                raise StartupError(f"{culprit} {why}; last log lines:\n{self._tail(culprit)}")
            time.sleep(0.25)
        log(f"{component} ready")

    def _started(self, component: str) -> bool:
        return (self.state_dir / f"{component}.pid").exists()

    def _exited(self, component: str) -> bool:
        """Whether a component this process started has ended. Asked of our
        own child through its Popen object: the pid file check alone once
        called a healthy etcd dead in CI (a transient /proc read)."""
        if not self._started(component):
            return False
        try:
            pid = int((self.state_dir / f"{component}.pid").read_text())
        except (OSError, ValueError):
            return False  # being written right now
        child = _CHILDREN.get(pid)
        if child is not None:
            return child.poll() is not None
        return self._pid(component) is None

    def _tail(self, component: str, lines: int = 40) -> str:
        path = self.state_dir / f"{component}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:]) + f"\n(full log: {path})"


_CHILDREN: dict[int, subprocess.Popen] = {}

# What `restart` can start again on its own: the data plane of the API. The
# others keep running and reconnect, as they would in a real cluster.
RESTARTABLE: dict[str, Callable[[ControlPlane], None]] = {
    "etcd": ControlPlane._start_etcd,
    "kube-apiserver": ControlPlane._start_apiserver,
}


def _terminate(pid: int) -> None:
    """SIGTERM, then SIGKILL if it has not gone within STOP_TIMEOUT."""
    for sig, grace in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.1)
        if not _alive(pid):
            break
    _CHILDREN.pop(pid, None)


def _kwok_rbac() -> dict:
    # The rules of kwok's own ClusterRole (kustomize/rbac), minus its CRDs we do not use.
    rules = [
        {"apiGroups": [""], "resources": ["events"],
         "verbs": ["create", "get", "list", "patch", "update", "watch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes/status", "pods/status"],
         "verbs": ["patch", "update"]},
        {"apiGroups": [""], "resources": ["pods"],
         "verbs": ["delete", "get", "list", "patch", "update", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["create", "get", "list", "patch", "update", "watch"]},
    ]  # fmt: skip
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "kwok-controller"}, "rules": rules}  # fmt: skip
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "kwok-controller"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "kwok-controller"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": "kwok-controller"}],
    }  # fmt: skip
    return {"apiVersion": "v1", "kind": "List", "items": [role, binding]}


def _kwok_node() -> dict:
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    key, value = KWOK_ANNOTATION
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": NODE_NAME,
                       "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
        },
        # Only pods that tolerate this taint land here: every other pod goes to a
        # node whose kubelet really runs it (tests/cluster/podrunner.py).
        "spec": {"taints": [{"key": key, "value": value, "effect": "NoSchedule"}]},
        # kwok keeps capacity/allocatable a node already reports.
        "status": {"capacity": resources, "allocatable": resources},
    }  # fmt: skip


# --------------------------------------------------------------------------- CLI


def main(argv: list[str]) -> int:
    verbs = ("up", "down", "status", "env")
    if len(argv) != 1 or argv[0] not in verbs:
        print(f"usage: {Path(__file__).name} {{{'|'.join(verbs)}}}", file=sys.stderr)
        return 2
    cp = ControlPlane()
    verb = argv[0]
    if verb == "up":
        try:
            print(cp.start())
        except (StartupError, subprocess.CalledProcessError) as err:
            log(f"failed: {err}")
            if isinstance(err, subprocess.CalledProcessError) and err.stderr:
                log(err.stderr.strip())
            return 1
    elif verb == "down":
        cp.stop()
    elif verb == "status":
        pids = cp.running()
        for component, pid in pids.items():
            print(f"{component:24} {f'running (pid {pid})' if pid else 'stopped'}")
        if all(pids.values()):
            print(f"kubeconfig: {cp.kubeconfig}")
        return 0 if all(pids.values()) else 3
    else:
        print(f"export KUBECONFIG={cp.kubeconfig}")
        print(f"export PATH={cp.bin_dir}:$PATH")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
