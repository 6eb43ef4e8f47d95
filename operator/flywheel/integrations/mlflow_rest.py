"""MLflow's REST API (/api/2.0/mlflow/...), the calls the operator makes.

Why not `mlflow.MlflowClient`: importing mlflow added 156 MiB to the
operator's resident memory (the scale benchmark's 688 MiB peak held it) and a
client builds its stores on every call, for fifteen plain JSON requests. The
workloads (training, serving, drift) still use mlflow itself.

It honours the environment variables MLflow's own client reads, so an operator
pointed at a secured server keeps working: MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD (basic auth), MLFLOW_TRACKING_TOKEN (bearer),
MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH,
MLFLOW_HTTP_REQUEST_TIMEOUT and MLFLOW_HTTP_REQUEST_MAX_RETRIES."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

import urllib3

API = "/api/2.0/mlflow/"
# Requests in flight to MLflow at once, from all handler threads together; the
# others wait for a free connection. A tracking server on SQLite with one
# worker answered 600 find-or-create runs at 54 a second from 4 threads and
# 14 a second from 32, with 32 of them timing out at 20 s: more requests at
# once only queue inside the server, on its database lock.
MAX_REQUESTS_ENV = "FLYWHEEL_MLFLOW_MAX_REQUESTS"
DEFAULT_MAX_REQUESTS = 4
# Fail fast and let the reconcile retry with its own backoff, rather than hold
# a handler thread through many retries.
DEFAULT_TIMEOUT = 20.0
DEFAULT_RETRIES = 2
# Answers of a busy server or of a proxy in front of one: a GET tries again.
RETRY_STATUSES = (429, 502, 503, 504)


class MlflowError(Exception):
    """MLflow answered with an error, or could not be reached (error_code None).

    The message starts with MLflow's error code, as MlflowClient's does, so
    "RESOURCE_DOES_NOT_EXIST: ..." reads the same in status and logs."""

    def __init__(self, message: str, error_code: str | None = None, http_status: int = 0):
        super().__init__(message)
        self.error_code = error_code
        self.http_status = http_status


class MlflowRest:
    """One tracking server's REST API over a thread-safe connection pool."""

    def __init__(self, tracking_uri: str, env: Mapping[str, str] = os.environ):
        if not tracking_uri.startswith(("http://", "https://")):
            raise MlflowError(
                f"MLFLOW_TRACKING_URI {tracking_uri!r}: the operator talks to an MLflow "
                "tracking server over HTTP; set it to the server's http(s):// address"
            )
        self.base = tracking_uri.rstrip("/") + API
        self.timeout = float(env.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or DEFAULT_TIMEOUT)
        self.retries = int(env.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") or DEFAULT_RETRIES)
        self.headers = {"Content-Type": "application/json", **_auth_headers(env)}
        insecure = (env.get("MLFLOW_TRACKING_INSECURE_TLS") or "").lower() == "true"
        tls: dict[str, Any] = {"cert_reqs": "CERT_NONE"} if insecure else {}
        if not insecure and env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            tls["ca_certs"] = env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
        # block: a request beyond the pool waits for a connection (at most the
        # request timeout) instead of opening one more.
        self.http = urllib3.PoolManager(maxsize=max_requests(env), block=True, **tls)

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        return self._call("GET", path, query={k: v for k, v in query.items() if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, body=body)

    def delete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("DELETE", path, body=body)

    def _call(
        self, method: str, path: str, *, query: dict | None = None, body: dict | None = None
    ) -> dict[str, Any]:
        url = self.base + path
        try:
            response = self.http.request(
                method,
                url,
                fields=query,
                body=json.dumps(body) if body is not None else None,
                headers=self.headers,
                timeout=urllib3.Timeout(total=self.timeout),
                retries=self._retry(),
                pool_timeout=self.timeout,
            )
        except urllib3.exceptions.HTTPError as err:
            raise MlflowError(f"cannot reach {url}: {_reason(err)}") from err
        return _answer(response, url)

    def _retry(self) -> urllib3.Retry:
        # A request that never reached the server (connect errors) is retried
        # whatever its method. One that may have been handled (a read timeout,
        # a 5xx answer) only when it is a GET: a create sent twice makes two runs.
        return urllib3.Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            other=0,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=1.0,
            raise_on_status=False,
        )


def _answer(response: urllib3.BaseHTTPResponse, url: str) -> dict[str, Any]:
    text = response.data.decode("utf-8", "replace")
    try:
        payload = json.loads(text) if text.strip() else {}
    except ValueError:
        payload = None
    if 200 <= response.status < 300 and isinstance(payload, dict):
        return payload
    if isinstance(payload, dict) and payload.get("error_code"):
        code = payload["error_code"]
        raise MlflowError(f"{code}: {payload.get('message', '')}", code, response.status)
    # Not MLflow's answer (a proxy's error page, or not an MLflow server at
    # all): nothing says the request was refused, so it reads as unavailable.
    excerpt = " ".join(text.split())[:200]
    raise MlflowError(f"HTTP {response.status} from {url}: {excerpt!r}", None, response.status)


def max_requests(env: Mapping[str, str] = os.environ) -> int:
    """FLYWHEEL_MLFLOW_MAX_REQUESTS, checked."""
    text = env.get(MAX_REQUESTS_ENV) or str(DEFAULT_MAX_REQUESTS)
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise MlflowError(
            f"{MAX_REQUESTS_ENV}={text!r}: the requests the operator sends MLflow at once "
            f"must be a whole number of at least 1 (default {DEFAULT_MAX_REQUESTS})"
        )
    return value


def _auth_headers(env: Mapping[str, str]) -> dict[str, str]:
    if env.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"}
    user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {
            "Authorization": urllib3.make_headers(basic_auth=f"{user}:{password}")["authorization"]
        }
    return {}


def _reason(err: Exception) -> str:
    # MaxRetryError wraps the cause ("Connection refused") in a long repr.
    cause = getattr(err, "reason", None) or err
    return str(cause).split(": ", 1)[-1] if ">: " in str(cause) else str(cause)


_clients: dict[str, MlflowRest] = {}
_clients_lock = threading.Lock()


def rest(tracking_uri: str) -> MlflowRest:
    """The shared client of this tracking URI (its pool serves every thread)."""
    with _clients_lock:
        if tracking_uri not in _clients:
            _clients[tracking_uri] = MlflowRest(tracking_uri)
        return _clients[tracking_uri]
