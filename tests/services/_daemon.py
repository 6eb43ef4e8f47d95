"""What the service runners share: a detached process with a pid file, a log
and a JSON state file in its own directory under <repo>/.cache/services/.

Only the standard library is used, so the runners' CLIs start with any python3.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Every service binds loopback only, unless FLYWHEEL_SERVICES_HOST names another
# local address: the single-node e2e binds the node's address, which its pods
# reach (with its own FLYWHEEL_SERVICES_DIR, so it never reuses a loopback one).
HOST = os.environ.get("FLYWHEEL_SERVICES_HOST") or "127.0.0.1"
STOP_TIMEOUT = 15.0


class StartupError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("FLYWHEEL_CACHE") or REPO / ".cache").resolve()


def services_dir() -> Path:
    return Path(os.environ.get("FLYWHEEL_SERVICES_DIR") or cache_dir() / "services").resolve()


def log(name: str, message: str) -> None:
    # stdout is kept for connection info (`eval "$(... up)"`); progress goes to stderr.
    print(f"{name}: {message}", file=sys.stderr, flush=True)


def free_port(preferred: int | None = None) -> int:
    """`preferred` if it is free on HOST (so a restart keeps its address), else any."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as sock:
            # As the servers do: a port whose old connections linger in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError as err:
                if err.errno == errno.EADDRNOTAVAIL:
                    raise OSError(
                        f"{HOST} is not an address of this machine; set FLYWHEEL_SERVICES_HOST "
                        "to one (`ip -br addr`), or unset it for 127.0.0.1"
                    ) from err
                continue
            return sock.getsockname()[1]
    raise OSError(f"no free port on {HOST}")


# Local addresses only: a developer's http_proxy setting must not route these checks.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status `url` answers with, or None when nothing answers."""
    try:
        with _OPENER.open(url, timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def process_alive(pid: int) -> bool:
    try:  # reap it if it is our own child, else it stays a zombie
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# Popen objects of the daemons this process started, so they are reaped quietly.
_CHILDREN: dict[int, subprocess.Popen] = {}


class Daemon:
    """One detached process. Its pid is trusted only while /proc shows the same
    command line that was started, so a reused pid is never signalled."""

    def __init__(self, name: str, state_dir: Path):
        self.name = name
        self.state_dir = state_dir
        self.pidfile = state_dir / "pid"
        self.logfile = state_dir / f"{name}.log"
        self.statefile = state_dir / "state.json"

    # ----------------------------------------------------------- state
    def read_state(self) -> dict:
        try:
            return json.loads(self.statefile.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def write_state(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.statefile.with_suffix(".tmp")
        # It may hold credentials: readable by the owner only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(state, out, indent=2)
            out.write("\n")
        tmp.replace(self.statefile)

    # ----------------------------------------------------------- process
    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None
        started = self.read_state().get("argv")
        for _ in range(20):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                return None
            if cmdline:
                break
            # Empty while the kernel is still inside exec(); Popen returns that early.
            time.sleep(0.05)
        argv = [part.decode(errors="replace") for part in cmdline.rstrip(b"\0").split(b"\0")]
        return pid if argv == started and process_alive(pid) else None

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("w") as out:
            # A new session detaches it from the CLI, its terminal and its signals;
            # it also makes the daemon the leader of a process group we can stop whole.
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=cwd, env=env,
            )  # fmt: skip
        _CHILDREN[proc.pid] = proc
        self.pidfile.write_text(str(proc.pid))
        return proc.pid

    def stop(self) -> bool:
        """SIGTERM to the daemon's process group, SIGKILL after STOP_TIMEOUT."""
        pid = self.pid()
        self.pidfile.unlink(missing_ok=True)
        if not pid:
            return False
        log(self.name, f"stopping (pid {pid})")
        for sig, grace in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)  # the group we created with start_new_session
            except ProcessLookupError:
                break
            end = time.monotonic() + grace
            while process_alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if not process_alive(pid):
                break
        proc = _CHILDREN.pop(pid, None)
        if proc:
            proc.poll()
        return True

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> float:
        """Seconds until `ready()`; StartupError with the log's tail if it exits or times out."""
        begin = time.monotonic()
        while not ready():
            if not self.pid():
                raise StartupError(f"{self.name} exited; last log lines:\n{self.tail()}")
            if time.monotonic() - begin > timeout:
                raise StartupError(
                    f"{self.name} not ready within {timeout:.0f}s; last log lines:\n{self.tail()}"
                )
            time.sleep(0.05)
        return time.monotonic() - begin

    def tail(self, lines: int = 40) -> str:
        text = self.logfile.read_text(errors="replace") if self.logfile.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:]) + f"\n(full log: {self.logfile})"


def clean_env(keep: dict[str, str], drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The caller's environment without AWS_*, MLFLOW_* and `drop`-prefixed settings,
    plus `keep`: a developer's own cloud profile or tracking server never leaks in."""
    prefixes = ("AWS_", "MLFLOW_", *drop)
    return {**{k: v for k, v in os.environ.items() if not k.startswith(prefixes)}, **keep}


def shell_exports(values: dict[str, str]) -> str:
    return "\n".join(f"export {key}={value}" for key, value in values.items())
