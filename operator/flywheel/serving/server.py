"""The server process: fetch the model, start the workers, stop them on SIGTERM.

uvicorn's own multi-process supervisor runs the workers: the server binds
the socket once and every worker accepts on it (the kernel spreads the
connections), workers are spawned (not forked: no threads or locks of
MLflow's copied half-way), a worker that dies is replaced, and SIGTERM goes
on to every worker, which stops accepting, finishes its requests, writes its
inference-log buffer and exits; the server exits 0 once all have.

The subclass adds what the metrics need: the multiprocess directory, and
forgetting a dead worker's gauges (its counters stay: they are totals). A
worker that cannot load the model exits with uvicorn's start-up failure
code, which stops the server with ModelUnloadable.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import uvicorn
from prometheus_client import multiprocess
from uvicorn.supervisors.multiprocess import Multiprocess

from .model import fetch
from .settings import EXIT_CODES, ServeError, ServeSettings, to_environment

log = logging.getLogger("flywheel.serve")

APP = "flywheel.serving.app:create_app"
GRACEFUL_SHUTDOWN_SECONDS = 25  # under Kubernetes' default 30 s grace period
WORKER_HEALTHCHECK_SECONDS = 30  # a worker importing MLflow answers pings slowly


def serve(settings: ServeSettings) -> int:
    """Fetch the model and serve it until SIGTERM; the exit code. Raises
    ServeError when the model cannot be had."""
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-serve-"))
    try:
        path = fetch(settings, str(workdir / "model"))
        log.info("fetched %s", settings.model_uri)
        return run_workers(settings.model_copy(update={"model_path": path}), workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_workers(settings: ServeSettings, workdir: Path) -> int:
    # Before any worker imports prometheus_client: it picks the mode at import.
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    (workdir / "ready").mkdir()  # a file per worker that has loaded the model
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    to_environment(settings)
    config = uvicorn.Config(
        APP,
        factory=True,
        host=settings.bind_address,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        interface="asgi3",
        access_log=False,  # a log line per request costs more than the request
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        log_level="info",
    )
    try:
        sock = config.bind_socket()
    except SystemExit as exc:  # uvicorn logs why, then exits
        raise ServeError(
            "InvalidSpec",
            f"cannot listen on FLYWHEEL_BIND_ADDRESS {settings.bind_address} "
            f"FLYWHEEL_PORT {settings.port} (in use, or not an address of this host)",
        ) from exc
    supervisor = Supervisor(config, sockets=[sock])
    supervisor.run()
    if supervisor.failed:
        return EXIT_CODES["ModelUnloadable"]
    return 0


class Supervisor(Multiprocess):
    failed = False

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        # Only a worker's start-up failure ends the server from in here.
        self.failed = self.should_exit.is_set()

        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                multiprocess.mark_process_dead(pid)
