"""What every benchmark needs: paths, the machine, versions, child processes
(started pinned to cores, in their own process group, stopped by their id),
and measuring one subprocess's wall time and peak memory."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parents[1]
CACHE = REPO / ".cache" / "bench"
VENV_BIN = Path(sys.executable).parent
MLSERVER_VENV = CACHE / "mlserver-venv"
HOST = "127.0.0.1"

# Two cores: the server under test gets one, the load generator the other.
SERVER_CPUS = "1"
CLIENT_CPUS = "0"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the machine and versions -------------------------------------------------


def machine() -> dict[str, object]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def versions(names: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def tool_version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def venv_versions(python: Path, names: list[str]) -> dict[str, str | None]:
    """Package versions as another venv's Python sees them."""
    code = (
        "import json, sys\nfrom importlib import metadata\nout = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = metadata.version(n)\n"
        "    except metadata.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", code, *names], capture_output=True, text=True, timeout=60
        )
        return json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return dict.fromkeys(names)


# --- ports and HTTP ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def http_post(url: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- child processes --------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    taskset = shutil.which("taskset")
    if cpus is None or taskset is None:
        return argv
    return [taskset, "-c", cpus, *argv]


def start(
    name: str, argv: list[str], env: dict[str, str], cpus: str | None, cwd: Path | None = None
) -> Child:
    """A long-running child (a server) in its own process group, its output in a log file."""
    logs = CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    out = open(log_path, "wb")  # noqa: SIM115  (the child holds it)
    process = subprocess.Popen(
        pinned(argv, cpus),
        env=env,
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    return Child(name, process, log_path)


def wait_ready(child: Child, url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited ({child.process.returncode}):\n{child.tail()}")
        if http_status(url) == 200:
            return
        time.sleep(0.25)
    # Stopped here: the caller never gets the child to stop. An operator left
    # running wrote its (empty) request counts over the next run's.
    tail = child.tail()
    stop(child)
    raise RuntimeError(f"{child.name} not ready at {url} after {timeout:.0f} s:\n{tail}")


def stop(child: Child, timeout: float = 30.0) -> None:
    """SIGTERM to the child's own process group (the server and its workers), then SIGKILL."""
    if child.process.poll() is not None:
        return
    pgid = child.process.pid  # start_new_session: the group's id is the child's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        child.process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        child.process.wait(10)


@dataclass(frozen=True)
class Measured:
    returncode: int
    seconds: float
    peak_rss_mib: float
    cpu_seconds: float
    output: str


def high_water_mib(pid: int) -> float | None:
    """The process's peak resident memory so far (VmHWM); None once it is
    gone, or while it is still this process's copy (forked, not yet exec'd)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f, open("/proc/self/cmdline", "rb") as me:
            if f.read() == me.read():
                return None
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(
    argv: list[str],
    env: dict[str, str] | None = None,
    cpus: str | None = None,
    timeout: float = 3600.0,
) -> Measured:
    """Run to completion: wall time, peak resident memory, CPU time.

    The peak is the child's own VmHWM, read every 10 ms while it runs (a
    high-water mark: only growth in its last 10 ms could be missed). Not
    the kernel's ru_maxrss from wait4: that also counts the copy of this
    (large) parent the child was between fork and exec."""
    out_path = CACHE / "logs" / "measured.out"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    peak = 0.0
    with open(out_path, "wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            pinned(argv, cpus),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(process.pid, 0)
                break
            mark = high_water_mib(process.pid)
            if mark is not None:
                peak = max(peak, mark)
            time.sleep(0.01)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        returncode=process.returncode,
        seconds=seconds,
        peak_rss_mib=peak,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        output=out_path.read_text(errors="replace"),
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FLYWHEEL_", "MLFLOW_", "PROMETHEUS_"))
    }
    env.update(
        {
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
        }
    )
    env.update(extra)
    return env
