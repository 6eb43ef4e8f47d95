"""MlflowRest's transport against a scripted local HTTP server (a fake: the
real `mlflow server` is in tests/integration/test_tracking_rest.py): what is
retried, what is not, and what a secured server is sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from flywheel.integrations import tracking
from flywheel.integrations.mlflow_rest import MlflowError, MlflowRest


class Scripted(ThreadingHTTPServer):
    """Answers each request with the next (status, body) of `answers`."""

    def __init__(self, answers):
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers = list(answers)
        self.seen: list[tuple[str, str, Any, str]] = []

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.server.seen.append((self.command, self.path, self.headers, body))
        status, payload = self.server.answers.pop(0)
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(*answers) -> Scripted:
        server = Scripted(answers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


FAST = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def test_a_get_is_tried_again_when_a_proxy_says_busy(serve):
    server = serve((503, "<html>busy</html>"), (200, {"run": {"info": {"run_id": "r"}}}))
    assert MlflowRest(server.uri, FAST).get("runs/get", run_id="r")["run"]["info"]["run_id"] == "r"
    assert [path for _, path, _, _ in server.seen] == ["/api/2.0/mlflow/runs/get?run_id=r"] * 2


def test_a_create_is_sent_once_even_when_the_answer_is_an_error(serve):
    # The server may have made the run before failing: sending it again would
    # make a second one.
    server = serve((503, "<html>busy</html>"), (200, {}))
    with pytest.raises(
        MlflowError, match=r"HTTP 503 from .*runs/create: '<html>busy</html>'"
    ) as err:
        MlflowRest(server.uri, FAST).post("runs/create", {"experiment_id": "1"})
    assert len(server.seen) == 1 and not tracking.refused(err.value)
    assert json.loads(server.seen[0][3]) == {"experiment_id": "1"}


def test_mlflows_error_code_leads_the_message_and_decides_refused(serve):
    server = serve(
        (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad name"}),
        (500, {"error_code": "INTERNAL_ERROR", "message": "database is locked"}),
    )
    mlflow = MlflowRest(server.uri, {**FAST, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    with pytest.raises(MlflowError, match="^INVALID_PARAMETER_VALUE: bad name$") as bad:
        mlflow.post("registered-models/create", {"name": ""})
    assert bad.value.http_status == 400 and tracking.refused(bad.value)
    with pytest.raises(MlflowError, match="^INTERNAL_ERROR: database is locked$") as down:
        mlflow.get("runs/get", run_id="r")
    assert not tracking.refused(down.value)


def test_a_secured_server_gets_the_credentials_mlflows_client_would_send(serve):
    server = serve((200, {}), (200, {}))
    MlflowRest(server.uri, {"MLFLOW_TRACKING_TOKEN": "t0k"}).get("experiments/search")
    user = {"MLFLOW_TRACKING_USERNAME": "ada", "MLFLOW_TRACKING_PASSWORD": "pw"}
    MlflowRest(server.uri + "/", user).delete("model-versions/delete", {"name": "m"})
    token, basic = (headers for _, _, headers, _ in server.seen)
    assert token["Authorization"] == "Bearer t0k"
    assert basic["Authorization"] == "Basic YWRhOnB3"  # ada:pw
    assert server.seen[1][:2] == ("DELETE", "/api/2.0/mlflow/model-versions/delete")


def test_a_tracking_uri_that_is_not_a_server_is_refused_with_the_fix():
    with pytest.raises(MlflowError, match="MLFLOW_TRACKING_URI 'file:///tmp/mlruns'.*http"):
        MlflowRest("file:///tmp/mlruns")


def test_requests_beyond_the_limit_wait_for_a_free_connection(serve):
    # The server sees at most FLYWHEEL_MLFLOW_MAX_REQUESTS at once; the rest
    # queue in the client rather than on the server's database lock.
    import time

    class Slow(Scripted):
        in_flight = peak = 0
        lock = threading.Lock()

    class SlowHandler(Handler):
        def _answer(self):
            with self.server.lock:
                self.server.in_flight += 1
                self.server.peak = max(self.server.peak, self.server.in_flight)
            time.sleep(0.1)
            with self.server.lock:
                self.server.in_flight -= 1
            super()._answer()

        do_GET = _answer

    server = Slow([(200, {})] * 12)
    server.RequestHandlerClass = SlowHandler
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mlflow = MlflowRest(server.uri, {**FAST, "FLYWHEEL_MLFLOW_MAX_REQUESTS": "3"})
        threads = [
            threading.Thread(target=mlflow.get, args=("runs/get",), kwargs={"run_id": str(i)})
            for i in range(12)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.shutdown()
        server.server_close()
    assert len(server.seen) == 12
    assert server.peak == 3


@pytest.mark.parametrize("value", ["0", "-2", "four"])
def test_a_bad_request_limit_names_the_setting_and_the_fix(value):
    with pytest.raises(MlflowError, match=f"FLYWHEEL_MLFLOW_MAX_REQUESTS='{value}'.*at least 1"):
        MlflowRest("http://127.0.0.1:1", {"FLYWHEEL_MLFLOW_MAX_REQUESTS": value})


def test_the_operator_refuses_to_start_with_a_bad_request_limit():
    from click.testing import CliRunner

    from flywheel.cli import main

    result = CliRunner().invoke(main, ["run"], env={"FLYWHEEL_MLFLOW_MAX_REQUESTS": "0"})
    assert result.exit_code == 2
    assert "FLYWHEEL_MLFLOW_MAX_REQUESTS='0'" in result.output


def test_a_run_is_searched_for_only_when_an_earlier_attempt_may_have_made_it(serve, monkeypatch):
    monkeypatch.setattr(tracking, "_attempted", set())
    started = tracking.STARTED
    made = {"run": {"info": {"run_id": "made"}}}
    server = serve(
        (200, made),  # a new object's first attempt: the create alone
        (200, {"runs": [{"info": {"run_id": "made"}}]}),  # its retry finds it
        (200, {"runs": []}),  # an object older than this process: looked for,
        (200, made),  # then made
    )
    monkeypatch.setattr(tracking, "_experiment_ids", {(server.uri, "exp"): "7"})

    def ensure(uid: str, created_at: float) -> str:
        return tracking.ensure_run(server.uri, "exp", uid, "r", {}, created_at=created_at)

    new = started + tracking.CLOCK_SKEW_SECONDS + 5
    assert ensure("new/v1", new) == "made"
    # The Job create failed after the run was made, say: the retry must find it.
    assert ensure("new/v1", new) == "made"
    # Created before this operator started: an earlier one may have made its run.
    assert ensure("old/v1", started - 600) == "made"
    paths = [path.rsplit("/", 1)[-1] for _, path, _, _ in server.seen]
    assert paths == ["create", "search", "search", "create"]
    tracking.forget_attempts("new")
    assert "new/v1" not in tracking._attempted and "old/v1" in tracking._attempted
