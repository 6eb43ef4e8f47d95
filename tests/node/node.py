#!/usr/bin/env python3
"""A real single-node Kubernetes on this machine: containerd, kubelet, kube-proxy.

    python tests/node/node.py up|down|status|env

`up` builds what is missing (tests/node/build_node.sh, base_images.sh), starts
a control plane of its own (tests/cluster/controlplane.py with a node address,
state in .cache/node/cluster, so `make test`'s cluster is never touched), then
containerd, the kubelet of node `node-0` and kube-proxy, imports the pause and
busybox images, and prints the kubeconfig path once node-0 is Ready.

The node's network (one per machine, so a machine-wide lock guards it):

    bridge flywheel0 10.244.0.1/24   pods get 10.244.0.2-254 (CNI bridge + host-local)
    10.244.0.1                       the host as pods see it: the apiserver's
                                     advertised address (the `kubernetes` Service
                                     endpoint), the kubelet's node IP, and where
                                     host services (MLflow, S3) must listen for pods
    10.0.0.0/24 via flywheel0        Service ClusterIPs (kube-proxy, iptables mode)

`down` removes the pods' sandboxes through the CRI (so CNI releases addresses
and rules), stops everything, runs kube-proxy --cleanup, unmounts what the node
mounted, deletes the bridge and route, and keeps only caches (binaries,
containerd's images), so the next `up` starts clean and fast.

Logs: .cache/node/{containerd,kubelet,kube-proxy}.log; the control plane's are
in .cache/node/cluster/. Needs root. Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "cluster"))
sys.path.insert(0, str(HERE))

import controlplane  # noqa: E402
import oci_image  # noqa: E402

NODE_NAME = "node-0"
NODE_LABELS = {"flywheel.dev/node": "real"}
BRIDGE = "flywheel0"
POD_CIDR = "10.244.0.0/24"
HOST_IP = "10.244.0.1"  # the bridge's address: pods' gateway and their way to the host
CNI_NETWORK = "flywheel"
CNI_BIN = "/usr/lib/cni"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
# Older tags some tools and charts name; the same image answers to them.
PAUSE_ALIASES = ("registry.k8s.io/pause:3.10",)
BUSYBOX_IMAGE = "flywheel.local/busybox:1"
DAEMONS = ("containerd", "kubelet", "kube-proxy")  # started in this order
UP_TIMEOUT = 180.0
# One node per machine: the bridge, the pod subnet and kube-proxy's iptables
# chains are machine-wide, whichever worktree starts the node.
MACHINE_LOCK = Path("/run/flywheel-node.lock")
# Which node dir the machine's node belongs to, while it is up.
MACHINE_OWNER = Path("/run/flywheel-node.owner")


class NodeError(RuntimeError):
    pass


def log(message: str) -> None:
    # stdout carries only the kubeconfig path, as controlplane.py's does.
    print(f"node: {message}", file=sys.stderr, flush=True)


def sh(*cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class Node:
    def __init__(self, cache: Path | None = None):
        cache = Path(cache or os.environ.get("FLYWHEEL_CACHE") or REPO / ".cache").resolve()
        self.bin_dir = cache / "bin"
        self.dir = cache / "node"
        self.images_dir = self.dir / "images"
        self.run_dir = self.dir / "run"  # everything `down` deletes
        self.socket = self.run_dir / "containerd" / "containerd.sock"
        self.kubelet_root = self.run_dir / "kubelet"
        self.cni_conf_dir = self.run_dir / "cni" / "net.d"
        self.cluster = controlplane.ControlPlane(
            state_dir=self.dir / "cluster", bin_dir=self.bin_dir, node_address=HOST_IP
        )
        self.kubeconfig = self.cluster.kubeconfig
        self.snapshotter = _snapshotter(self.dir)

    # ------------------------------------------------------------- public

    def up(self) -> Path:
        """Bring the node up (or find it up); return the admin kubeconfig."""
        begin = time.monotonic()
        self._require_root()
        self.build()
        with self._machine_lock():
            if self.is_running():
                log(f"already up ({self.dir})")
                return self.kubeconfig
            self._refuse_a_node_of_another_tree()
            self._down()  # whatever half of a node is left, start clean
            MACHINE_OWNER.write_text(str(self.dir))
            try:
                self._up()
            except BaseException:
                log("start failed; tearing down what was started (logs stay in place)")
                self._down()
                raise
        log(f"{NODE_NAME} ready in {time.monotonic() - begin:.1f}s (kubeconfig {self.kubeconfig})")
        return self.kubeconfig

    def down(self) -> None:
        self._require_root()
        with self._machine_lock():
            self._down()

    def is_running(self) -> bool:
        return all(self._pid(d) for d in DAEMONS) and self.cluster.is_running()

    def status(self) -> dict[str, int | None]:
        return {**self.cluster.running(), **{d: self._pid(d) for d in DAEMONS}}

    def build(self) -> None:
        for script in ("build_node.sh", "base_images.sh"):
            proc = subprocess.run(["bash", str(HERE / script)], stdout=sys.stderr)
            if proc.returncode != 0:
                raise NodeError(f"tests/node/{script} failed ({proc.returncode}); see above")

    def import_image(self, archive: Path, also_tag: tuple[str, ...] = ()) -> bool:
        """Load an OCI archive (tests/node/oci_image.py) into the node's containerd."""
        return oci_image.import_image(
            archive, str(self.socket), snapshotter=self.snapshotter, also_tag=also_tag
        )

    def kubectl(self, *args: str, check: bool = True, input: str | None = None):
        return self.cluster.kubectl(*args, check=check, input=input)

    # ------------------------------------------------------------ bring-up

    def _up(self) -> None:
        deadline = time.monotonic() + UP_TIMEOUT
        self._prepare_host_network()
        log("starting the control plane")
        self.cluster.start()
        for path in (self.socket.parent, self.kubelet_root, self.cni_conf_dir):
            path.mkdir(parents=True, exist_ok=True)
        self._write_cni_config()
        self._start_containerd()
        self._wait("containerd", deadline, self._containerd_ready)
        t0 = time.monotonic()
        self.import_image(self.images_dir / "pause.tar", also_tag=PAUSE_ALIASES)
        self.import_image(self.images_dir / "busybox.tar")
        log(f"images imported in {time.monotonic() - t0:.1f}s")
        self._start_kubelet()
        self._wait("kubelet", deadline, self._node_ready)
        self._start_kube_proxy()
        self._wait("kube-proxy", deadline, self._kube_proxy_healthy)
        self.kubectl("label", "node", NODE_NAME, "--overwrite",
                     *(f"{k}={v}" for k, v in NODE_LABELS.items()))  # fmt: skip

    def _prepare_host_network(self) -> None:
        """Forwarding, bridged traffic through iptables (kube-proxy's rules see
        pod-to-Service packets), and the bridge with the host's pod-side address
        made before anything needs it: host services can bind HOST_IP early."""
        for key, value in (("net/ipv4/ip_forward", "1"),
                           ("net/bridge/bridge-nf-call-iptables", "1")):  # fmt: skip
            path = Path("/proc/sys") / key
            if not path.exists():
                raise NodeError(f"{path} is missing: the kernel needs br_netfilter for pods")
            if path.read_text().strip() != value:
                path.write_text(value)
        if sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            sh("ip", "link", "add", BRIDGE, "type", "bridge")
        addrs = sh("ip", "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
        if f" {HOST_IP}/" not in addrs:
            sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        # ClusterIPs route to the bridge, so the host reaches Services (its
        # packets get kube-proxy's DNAT) even on a machine with no default route.
        sh("ip", "route", "replace", controlplane.SERVICE_CIDR, "dev", BRIDGE, "src", HOST_IP)

    def _write_cni_config(self) -> None:
        # The loopback interface is not in the list: containerd's CRI brings up
        # every pod's lo itself, with the loopback plugin from CNI_BIN.
        conflist = {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": True,  # pods reach beyond the host with its address
                    "hairpinMode": True,  # a pod can reach itself via its Service
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": HOST_IP}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.run_dir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (self.cni_conf_dir / "10-flywheel.conflist").write_text(json.dumps(conflist, indent=2))

    def _start_containerd(self) -> None:
        base = self.run_dir / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""\
# Written by tests/node/node.py: a containerd of the node's own, apart from any
# system containerd (own root, state, socket).
version = 2
# Images survive `down` (content and snapshots), so each is imported once.
root = "{self.dir / "containerd-root"}"
state = "{base / "state"}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
[{cri}]
  # No registry here: the pause image is imported from an archive under this tag.
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  # Containers may not get an OOM score below containerd's own: this machine
  # withholds CAP_SYS_RESOURCE, and runc fails to start the kubelet's -998
  # sandboxes ("can't get final child's PID from pipe") without this.
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "{self.snapshotter}"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{shutil.which("runc") or "/usr/sbin/runc"}"
        # runc's own state too, apart from a system containerd's /run/containerd/runc.
        Root = "{base / "runc"}"
        # cgroup v1 with the cgroupfs driver, the kubelet's cgroupDriver.
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.cni_conf_dir}"
"""
        path = self.run_dir / "containerd.toml"
        path.write_text(config)
        self._spawn("containerd", [shutil.which("containerd") or "containerd", f"--config={path}"])

    def _start_kubelet(self) -> None:
        kubeconfig = self.cluster.client_kubeconfig(
            "kubelet-node-0", f"/O=system:nodes/CN=system:node:{NODE_NAME}",
            self.run_dir / "kubelet.kubeconfig",
        )  # fmt: skip
        port, healthz = controlplane.free_ports(2)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            # The apiserver (logs, exec) shows its client certificate; anything
            # else must be a cluster user allowed by the apiserver's RBAC.
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.cluster.pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            # This VM has cgroup v1 only, and no systemd managing cgroups.
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(self.run_dir / "pod-logs"),
            # A test VM: never evict for a disk that other work fills, and never
            # garbage-collect images - they come from archives, with no registry
            # to pull them back from.
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "protectKernelDefaults": False,
            # Its default, -999, needs CAP_SYS_RESOURCE, which this machine withholds.
            "oomScoreAdj": 0,
            "serializeImagePulls": False,
            "registerNode": True,
            "clusterDomain": "cluster.local",
            # Status every few seconds: tests see Ready and pod phases promptly.
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "resolvConf": "/etc/resolv.conf",
        }  # fmt: skip
        path = self.run_dir / "kubelet.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self._spawn("kubelet", [
            str(self.bin_dir / "kubelet"), f"--config={path}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.kubelet_root}", f"--cert-dir={self.run_dir / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={HOST_IP}", "--v=2",
        ])  # fmt: skip

    def _start_kube_proxy(self) -> None:
        kubeconfig = self.cluster.client_kubeconfig(
            "kube-proxy", "/CN=system:kube-proxy", self.run_dir / "kube-proxy.kubeconfig"
        )  # the built-in system:node-proxier role is bound to user system:kube-proxy
        metrics, healthz = controlplane.free_ports(2)
        self.proxy_healthz = healthz
        (self.run_dir / "kube-proxy.port").write_text(str(healthz))
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE_NAME,
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "metricsBindAddress": f"127.0.0.1:{metrics}",
            "healthzBindAddress": f"127.0.0.1:{healthz}",
            # Leave the host's conntrack table size alone (a VM may refuse it).
            "conntrack": {"maxPerCore": 0},
            "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s"},
        }
        path = self.run_dir / "kube-proxy.yaml"
        path.write_text(json.dumps(config, indent=2))
        self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={path}", "--v=2"])

    # ------------------------------------------------------------ teardown

    def _down(self) -> None:
        crictl = [str(self.bin_dir / "crictl"), f"--runtime-endpoint=unix://{self.socket}",
                  "--timeout=60s"]  # fmt: skip
        self._stop("kube-proxy")
        kube_proxy = self.bin_dir / "kube-proxy"
        if kube_proxy.exists():  # its KUBE-* chains in the iptables and nft tables
            sh(str(kube_proxy), "--cleanup", "--v=0", check=False)
        self._stop("kubelet")  # first, so it does not recreate what we remove
        _remove_chains(KUBELET_CHAINS)
        if self._pid("containerd") and self.socket.exists():
            # Through the CRI, so each sandbox's CNI DEL runs: veth, address and
            # the bridge plugin's masquerade and portmap rules go with it.
            proc = sh(*crictl, "rmp", "--all", "--force", check=False, timeout=180)
            if proc.returncode != 0:
                log(f"crictl rmp failed: {proc.stderr.strip()}")
        self._stop("containerd")
        self._kill_shims()
        _kill_cgroup_processes("kubepods")  # only if a crash left containers behind
        _remove_pod_netns()
        _remove_cni_rules()
        self._unmount_under(self.dir)
        sh("ip", "link", "del", BRIDGE, check=False)  # takes the ClusterIP route along
        _remove_cgroups("kubepods")
        self.cluster.stop()
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        if MACHINE_OWNER.exists() and MACHINE_OWNER.read_text() == str(self.dir):
            MACHINE_OWNER.unlink()

    def _kill_shims(self) -> None:
        """containerd leaves its shims (one per pod) running when it stops; ours
        carry our socket in their command line."""
        needle = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline.split(b"\0")[0] and needle in cmdline:
                log(f"stopping leftover shim (pid {proc.name})")
                controlplane._terminate(int(proc.name))

    def _unmount_under(self, root: Path) -> None:
        """Unmount whatever is mounted below `root` (pod volumes, overlay
        rootfs, sandbox shm), deepest first."""
        prefix = str(root) + "/"
        for _ in range(3):  # mounts can stack; a second pass takes what is below
            points = []
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix):
                    points.append(point)
            if not points:
                return
            for point in sorted(points, key=len, reverse=True):
                if sh("umount", point, check=False).returncode != 0:
                    sh("umount", "-l", point, check=False)
        log(f"mounts left under {root}: see /proc/self/mountinfo")

    # ------------------------------------------------------------ processes

    def _spawn(self, name: str, cmd: list[str]) -> None:
        logfile = self.dir / f"{name}.log"
        with logfile.open("w") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.run_dir,
            )  # fmt: skip
        controlplane._CHILDREN[proc.pid] = proc
        (self.run_dir / f"{name}.pid").write_text(str(proc.pid))

    def _pid(self, name: str) -> int | None:
        binary = shutil.which(name) if name == "containerd" else str(self.bin_dir / name)
        return controlplane._read_pid(self.run_dir / f"{name}.pid", Path(binary or name))

    def _exited(self, name: str) -> bool:
        """Whether a daemon this process started has ended. Asked of the Popen
        object: just after the fork, /proc/PID/cmdline is still python's."""
        try:
            pid = int((self.run_dir / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return False  # not started (yet)
        child = controlplane._CHILDREN.get(pid)
        return child.poll() is not None if child else self._pid(name) is None

    def _stop(self, name: str) -> None:
        pid = self._pid(name)
        if pid:
            log(f"stopping {name} (pid {pid})")
            controlplane._terminate(pid)
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)

    def _wait(self, name: str, deadline: float, ready) -> None:
        t0 = time.monotonic()
        while not ready():
            for daemon in DAEMONS:
                if self._exited(daemon):
                    raise NodeError(f"{daemon} exited; last log lines:\n{self._tail(daemon)}")
            if time.monotonic() > deadline:
                raise NodeError(f"{name} not ready within {UP_TIMEOUT:.0f}s; last log lines:\n"
                                f"{self._tail(name)}")  # fmt: skip
            time.sleep(0.5)
        log(f"{name} ready ({time.monotonic() - t0:.1f}s)")

    def _tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:]) + f"\n(full log: {path})"

    # ---------------------------------------------------------------- health

    def _containerd_ready(self) -> bool:
        if not self.socket.exists():
            return False
        ctr = shutil.which("ctr") or "ctr"
        return sh(ctr, f"--address={self.socket}", "version", check=False).returncode == 0

    def _node_ready(self) -> bool:
        node = self.cluster._get(f"/api/v1/nodes/{NODE_NAME}")
        conditions = node.get("status", {}).get("conditions", []) if isinstance(node, dict) else []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _kube_proxy_healthy(self) -> bool:
        import urllib.request

        port = (self.run_dir / "kube-proxy.port").read_text().strip()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    # ---------------------------------------------------------------- guards

    @staticmethod
    def _require_root() -> None:
        if os.geteuid() != 0:
            raise NodeError("needs root (containerd, kubelet, bridges and iptables)")

    def _refuse_a_node_of_another_tree(self) -> None:
        """Two nodes would share the bridge, the subnet and kube-proxy's chains:
        refuse while another clone's node still runs."""
        owner = MACHINE_OWNER.read_text().strip() if MACHINE_OWNER.exists() else ""
        if not owner or owner == str(self.dir):
            return
        other = Node(Path(owner).parent)
        if any(other._pid(d) for d in DAEMONS):
            raise NodeError(
                f"the node of {owner} runs on this machine (one node per machine): "
                f"stop it first with `FLYWHEEL_CACHE={Path(owner).parent} "
                f"python3 tests/node/node.py down` from that clone"
            )

    @contextlib.contextmanager
    def _machine_lock(self):
        with MACHINE_LOCK.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"waiting for {MACHINE_LOCK}: another node up/down runs on this machine")
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _snapshotter(where: Path) -> str:
    """overlayfs, containerd's default, when the kernel has it and `where` is not
    itself on overlayfs (e.g. inside a container, where overlay-on-overlay fails);
    else native, which copies whole layers but works anywhere."""
    if "\toverlay\n" not in Path("/proc/filesystems").read_text():
        return "native"
    probe = where
    while not probe.exists():
        probe = probe.parent
    fstype = sh("stat", "-f", "-c", "%T", str(probe), check=False).stdout.strip()
    return "native" if fstype == "overlayfs" else "overlayfs"


# What the kubelet makes in iptables (kube-proxy --cleanup does not know them).
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")


def _remove_chains(chains: tuple[str, ...]) -> None:
    """Delete `chains` and the rules jumping to them, in every table of both
    address families; chains not there are skipped."""
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(tool):
            continue
        for table in ("filter", "nat", "mangle"):
            rules = sh(tool, "-w", "-t", table, "-S", check=False).stdout.splitlines()
            for rule in rules:
                parts = rule.split()
                if parts[:1] == ["-A"] and parts[-2:-1] == ["-j"] and parts[-1] in chains:
                    sh(tool, "-w", "-t", table, "-D", *parts[1:], check=False)
            for rule in rules:
                parts = rule.split()
                if parts[:1] == ["-N"] and parts[1] in chains:
                    sh(tool, "-w", "-t", table, "-F", parts[1], check=False)
                    sh(tool, "-w", "-t", table, "-X", parts[1], check=False)


def _cgroup_trees(name: str) -> list[Path]:
    """The kubelet's cgroup tree `name` in every hierarchy (cgroup v1 has one
    per controller under /sys/fs/cgroup; v2 has /sys/fs/cgroup itself)."""
    root = Path("/sys/fs/cgroup")
    tops = [root / name, *(h / name for h in root.iterdir() if h.is_dir())]
    return [top for top in tops if top.is_dir()]


def _kill_cgroup_processes(name: str) -> None:
    """SIGKILL whatever still runs in the pods' cgroups: containers whose shim
    or containerd died never got stopped through the CRI."""
    pids = set()
    for top in _cgroup_trees(name):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(pid) for pid in procs.read_text().split())
    pids.discard(os.getpid())
    if pids:
        log(f"killing {len(pids)} leftover container processes in cgroup {name}")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _remove_pod_netns() -> None:
    """Delete network namespaces holding a pod address of ours, which a
    sandbox never stopped through the CRI leaves behind (with its veth)."""
    netns_dir = Path("/var/run/netns")
    if not netns_dir.is_dir():
        return
    subnet = POD_CIDR.rsplit(".", 1)[0] + "."  # /24
    for ns in netns_dir.glob("cni-*"):
        addrs = sh("ip", "-n", ns.name, "-o", "-4", "addr", "show", check=False).stdout
        if f"inet {subnet}" in addrs:
            log(f"removing leftover pod network namespace {ns.name}")
            sh("ip", "netns", "delete", ns.name, check=False)


def _remove_cni_rules() -> None:
    """Delete the bridge and portmap plugins' nat rules for our network (their
    comment names it) and the per-pod chains they jump to: a sandbox never
    stopped through the CRI never had its CNI DEL."""
    marker = f'name: \\"{CNI_NETWORK}\\"'  # as iptables-save quotes the comment
    chains = set()
    for line in sh("iptables-save", "-t", "nat", check=False).stdout.splitlines():
        if not line.startswith("-A ") or marker not in line:
            continue
        rule = shlex.split(line)
        target = rule[rule.index("-j") + 1] if "-j" in rule else ""
        if target.startswith("CNI-") and not target.startswith("CNI-HOSTPORT-"):
            chains.add(target)
        sh("iptables", "-w", "-t", "nat", "-D", *rule[1:], check=False)
    for chain in chains:
        sh("iptables", "-w", "-t", "nat", "-F", chain, check=False)
        sh("iptables", "-w", "-t", "nat", "-X", chain, check=False)
    if chains:
        log(f"removed {len(chains)} leftover CNI chains")


def _remove_cgroups(name: str) -> None:
    """Remove the kubelet's (now empty) cgroup tree `name`, children first; a
    cgroup still holding a process stays."""
    for top in _cgroup_trees(name):
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for path in [*dirs, top]:
            with contextlib.suppress(OSError):
                path.rmdir()


# --------------------------------------------------------------------------- CLI


def main(argv: list[str]) -> int:
    verbs = ("up", "down", "status", "env")
    if len(argv) != 1 or argv[0] not in verbs:
        print(f"usage: {Path(__file__).name} {{{'|'.join(verbs)}}}", file=sys.stderr)
        return 2
    node, verb = Node(), argv[0]
    try:
        if verb == "up":
            print(node.up())
        elif verb == "down":
            node.down()
            log("down")
        elif verb == "status":
            pids = node.status()
            for name, pid in pids.items():
                print(f"{name:24} {f'running (pid {pid})' if pid else 'stopped'}")
            return 0 if all(pids.values()) else 3
        else:
            print(f"export KUBECONFIG={node.kubeconfig}")
            print(f"export PATH={node.bin_dir}:$PATH")
            print(f"export FLYWHEEL_NODE_HOST_IP={HOST_IP}")
            print(f"export CONTAINERD_ADDRESS={node.socket}")
            print("export CONTAINERD_NAMESPACE=k8s.io")
            print(f"export CONTAINER_RUNTIME_ENDPOINT=unix://{node.socket}")
    except (NodeError, controlplane.StartupError, subprocess.CalledProcessError) as err:
        log(f"failed: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
