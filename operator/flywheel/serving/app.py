"""The ASGI application one worker runs: routing, the request path, start-up.

A bare ASGI callable rather than a framework: the routes are a handful of
fixed paths, and skipping a router, request/response objects and middleware
keeps per-request overhead to reading the body, orjson, the checks and the
model. Prediction runs on the event loop: it is CPU-bound and holds the GIL,
so a thread hop would only add latency; the worker processes give the
parallelism.

The model loads on a thread started at ASGI start-up, so the worker answers
liveness (and says "not ready") while it loads. A model that cannot load
stops the worker with uvicorn's start-up failure code, which stops the
server (server.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .. import __version__
from .inference_log import InferenceLog, LogSettings
from .metrics import CONTENT_TYPE, ServeMetrics
from .model import ServedModel, load
from .protocols import decode_invocations, decode_v2, encode_invocations, encode_v2
from .settings import ServeError, ServeSettings, from_environment, report_failure
from .signature import Column, InputError

log = logging.getLogger("flywheel.serve")

MAX_BODY_BYTES = 64 << 20
STARTUP_FAILURE = 3  # uvicorn's code for a worker that could not start
JSON = b"application/json"
V2_DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
}


def create_app() -> ServingApp:
    """uvicorn's factory, in each worker: settings from the server process."""
    from ..workloads.snapshot import configure_logging
    from ..workloads.termination import secret_values

    configure_logging(secret_values(os.environ), ("flywheel.serve",))
    return ServingApp(from_environment())


class BodyTooLarge(Exception):
    pass


class Disconnected(Exception):
    pass


class ServingApp:
    def __init__(self, settings: ServeSettings, exit_on_failure: bool = True) -> None:
        self.settings = settings
        self.metrics = ServeMetrics(settings.model_version, settings.track)
        self.model: ServedModel | None = None  # set once loaded: readiness
        self._all_ready = False
        self.inference_log: InferenceLog | None = None
        self.exit_on_failure = exit_on_failure
        self.failure: ServeError | None = None
        self.name = settings.model_name
        self.v2_prefix = f"/v2/models/{settings.model_name}"

    # --- ASGI ----------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                threading.Thread(target=self.load, name="model-load", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope: dict, receive: Any, send: Any) -> None:
        method, path = scope["method"], scope["path"]
        try:
            if method == "POST":
                if path == "/invocations":
                    await self.infer("invocations", None, scope, receive, send)
                    return
                if path.startswith("/v2/models/") and path.endswith("/infer"):
                    name = path[len("/v2/models/") : -len("/infer")]
                    await self.infer("v2", name, scope, receive, send)
                    return
            elif method in ("GET", "HEAD"):
                status, body, content_type = self.get(path)
                await respond(send, status, body, content_type)
                return
            await respond(send, 404, error_body("v2", f"no route {method} {path}", status=404))
        except Disconnected:
            return

    # --- GET -----------------------------------------------------------------

    def all_workers_ready(self) -> bool:
        """Ready once every worker has its model: the kubelet's probe reaches
        one worker, and a pod marked Ready must not send calls to a worker
        still loading. Workers leave a file named by their pid in `ready/`
        beside the metrics directory (absent: one process, this one)."""
        if self.model is None:
            return False
        if not self._all_ready:
            folder = ready_folder()
            count = len(list(folder.iterdir())) if folder else 1
            self._all_ready = count >= self.settings.workers
        return self._all_ready

    def get(self, path: str) -> tuple[int, bytes, bytes]:
        ready = self.all_workers_ready()
        if path == "/v2/health/live":
            return 200, b'{"live":true}', JSON
        if path in ("/v2/health/ready", "/ping", "/health"):
            return (200 if ready else 503), orjson.dumps({"ready": ready}), JSON
        if path == "/metrics":
            return 200, self.metrics.exposition(), CONTENT_TYPE.encode()
        if path == "/v2":
            meta = {"name": "flywheel", "version": __version__, "extensions": []}
            return 200, orjson.dumps(meta), JSON
        if path.startswith("/v2/models/"):
            rest = path[len("/v2/models/") :]
            name, _, tail = rest.partition("/")
            if name != self.name:
                return 404, self.unknown_model(name), JSON
            if tail == "ready":
                return (200 if ready else 503), orjson.dumps({"name": name, "ready": ready}), JSON
            if tail == "":
                return self.model_metadata()
        return 404, error_body("v2", f"no route GET {path}", status=404), JSON

    def unknown_model(self, name: str) -> bytes:
        message = f"model {name!r} not found; this server serves {self.name!r}"
        return orjson.dumps({"error": message, "field": "model_name"})

    def model_metadata(self) -> tuple[int, bytes, bytes]:
        if self.model is None:
            return 503, orjson.dumps({"error": "the model is loading"}), JSON
        body = {
            "name": self.name,
            "versions": [self.settings.model_version],
            "platform": f"mlflow_{self.model.flavor}",
            "inputs": [tensor_metadata(c) for c in self.model.schema or ()],
            "outputs": [tensor_metadata(c) for c in self.model.outputs],
        }
        return 200, orjson.dumps(body), JSON

    # --- inference -------------------------------------------------------------

    async def infer(self, protocol: str, name: str | None, scope, receive, send) -> None:
        started = time.perf_counter()
        metrics = self.metrics
        metrics.in_flight.inc()
        try:
            status, body = await self.answer(protocol, name, scope, receive)
        except Disconnected:
            metrics.in_flight.dec()
            raise
        except Exception as exc:  # a bug of ours: still an answer, never a dead worker
            log.exception("inference request failed")
            status = 500
            body = error_body(protocol, f"internal error: {type(exc).__name__}", status=500)
        metrics.in_flight.dec()
        # Counted before the answer leaves: a client (or the canary analysis)
        # that reads /metrics right after its answer must find it counted.
        # Counted after, a scrape could slip in between (seen in CI under load).
        metrics.request(protocol, status)
        metrics.duration.observe(time.perf_counter() - started)
        await respond(send, status, body)

    async def answer(self, protocol: str, name: str | None, scope, receive) -> tuple[int, bytes]:
        if name is not None and name != self.name:
            await read_body(receive, MAX_BODY_BYTES)
            return 404, self.unknown_model(name)
        try:
            raw = await read_body(receive, MAX_BODY_BYTES)
        except BodyTooLarge:
            message = f"the body is over {MAX_BODY_BYTES >> 20} MiB"
            return 413, error_body(protocol, message, status=413)
        model = self.model
        if model is None:
            return 503, error_body(protocol, "the model is loading; try again shortly", status=503)
        if not json_content(scope):
            return 415, error_body(protocol, "send Content-Type: application/json", status=415)
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return 400, error_body(protocol, f"the body is not JSON: {exc}")
        try:
            if protocol == "v2":
                batch = decode_v2(request, model.schema)
            else:
                batch = decode_invocations(request, model.schema)
        except InputError as exc:
            return exc.status, error_body(protocol, exc.message, exc.field, exc.status)
        try:
            outputs = model.predict(batch)
        except Exception as exc:
            log.warning("the model failed on %d rows: %s: %s", batch.rows, type(exc).__name__, exc)
            message = f"the model failed: {type(exc).__name__}: {exc}"
            return 500, error_body(protocol, message, status=500)
        self.observe(model, batch, outputs)
        if protocol == "v2":
            rid = request.get("id")
            answer = encode_v2(outputs, self.name, self.settings.model_version, rid)
        else:
            answer = encode_invocations(outputs)
        return 200, orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)

    def observe(self, model: ServedModel, batch, outputs: dict[str, np.ndarray]) -> None:
        primary = next(iter(outputs.values()))
        self.metrics.batch.observe(batch.rows)
        if model.classifier:
            self.metrics.count_classes(primary)
        elif primary.dtype.kind in "fiub":
            self.metrics.observe_values(primary)
        if self.inference_log is not None and len(primary) == batch.rows:
            self.inference_log.record(batch, primary)

    # --- start-up and shutdown -------------------------------------------------

    def load(self) -> None:
        settings = self.settings
        try:
            if not settings.model_path:
                raise ServeError("InternalError", "the server gave the worker no model path")
            model = load(settings.model_path)
            if settings.log_uri:
                self.inference_log = self.open_log(model)
        except ServeError as exc:
            self.fail(exc)
            return
        except Exception as exc:
            self.fail(ServeError("ModelUnloadable", f"cannot load the model: {exc}"))
            return
        self.metrics.loaded(settings.model_uri)
        self.model = model
        folder = ready_folder()
        if folder:
            (folder / str(os.getpid())).touch()
        log.info("worker %d: %s loaded, ready", os.getpid(), settings.model_uri)

    def open_log(self, model: ServedModel) -> InferenceLog:
        settings = self.settings
        log_settings = LogSettings(
            uri=settings.log_uri or "",
            sample_rate=settings.log_sample_rate,
            flush_seconds=settings.log_flush_seconds,
            batch_rows=settings.log_batch_rows,
            endpoint=settings.s3_endpoint,
        )
        try:
            inference_log = InferenceLog(
                log_settings, model.schema, model.classifier, settings.model_version, self.metrics
            )
        except ValueError as exc:
            raise ServeError("InvalidSpec", str(exc)) from exc
        inference_log.start()
        return inference_log

    def fail(self, exc: ServeError) -> None:
        self.failure = exc
        report_failure(exc)
        if self.exit_on_failure:
            sys.stderr.flush()
            os._exit(STARTUP_FAILURE)

    def close(self) -> None:
        if self.inference_log is not None:
            self.inference_log.close()


# --- helpers -------------------------------------------------------------------


def tensor_metadata(column: Column) -> dict[str, Any]:
    return {"name": column.name, "datatype": V2_DATATYPES.get(column.type, "BYTES"), "shape": [-1]}


MLFLOW_ERROR_CODES = {
    404: "RESOURCE_DOES_NOT_EXIST",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}


def error_body(protocol: str, message: str, field: str | None = None, status: int = 400) -> bytes:
    if protocol == "invocations":  # MLflow's scoring server's shape
        code = MLFLOW_ERROR_CODES.get(status, "BAD_REQUEST")
        body: dict[str, Any] = {"error_code": code, "message": message}
    else:  # the Open Inference Protocol's
        body = {"error": message}
    if field is not None:
        body["field"] = field
    return orjson.dumps(body)


def json_content(scope: dict) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return value.split(b";")[0].strip().lower() == JSON
    return True  # none given: assume JSON, as curl -d users expect


async def read_body(receive: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(send: Any, status: int, body: bytes, content_type: bytes = JSON) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def ready_folder() -> Path | None:
    """`ready/` beside the multiprocess metrics directory, when several workers run."""
    metrics = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not metrics:
        return None
    folder = Path(metrics).parent / "ready"
    return folder if folder.is_dir() else None
