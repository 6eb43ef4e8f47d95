"""Measuring a canary against real HTTP servers: model-server pods and a fake Prometheus."""

import json
import math
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from flywheel.api.inferenceservice import MetricQuery
from flywheel.integrations.canary_metrics import (
    NoData,
    PrometheusError,
    Snapshot,
    figures_between,
    histogram_quantile,
    prometheus_figures,
    query_prometheus,
    scrape,
    standard_queries,
)

BUCKETS = (0.05, 0.1, 0.2, 0.5, 1.0)


class Pod:
    """A model server's metrics, as its /metrics endpoint serves them."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flywheel_serve_requests_total",
            "Requests answered.",
            ["model_version", "track", "protocol", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "flywheel_serve_request_duration_seconds",
            "Request latency.",
            ["model_version", "track"],
            buckets=BUCKETS,
            registry=self.registry,
        )

    def serve(self, n: int, seconds: float, code: str = "200", track: str = "canary") -> None:
        version = "iris-v2" if track == "canary" else "iris-v1"
        for _ in range(n):
            self.requests.labels(version, track, "v2", code).inc()
            self.duration.labels(version, track).observe(seconds)


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def pod_server(pod: Pod) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = generate_latest(pod.registry)
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with http_server(Handler) as url:
        yield f"{url}/metrics"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/metrics"


def test_scrape_twice_gives_the_interval_figures():
    a, b = Pod(), Pod()
    a.serve(90, 0.03)
    a.serve(10, 0.15)
    b.serve(50, 0.8, track="stable")  # another track: ignored
    with pod_server(a) as url_a, pod_server(b) as url_b:
        targets = {"pod-a": url_a, "pod-b": url_b}
        first = scrape(targets)
        assert first.failures == {}
        assert first.pods["pod-a"].requests == 100 and first.pods["pod-b"].requests == 0
        # from zero: 90 under 50ms, 10 in (0.1, 0.2] -> p99 at 9/10 of that bucket
        since_start = figures_between(None, first)
        assert since_start.requests == 100 and since_start.errors == 0
        assert since_start.p99_latency_ms == pytest.approx(190)

        a.serve(60, 0.03)
        a.serve(10, 0.03, code="500")
        a.serve(5, 0.03, code="503")
        b.serve(25, 0.03)
        b.serve(100, 0.4)
        b.serve(7, 0.4, code="404")  # 4xx is not an error of the server
        second = scrape(targets)

    figures = figures_between(first, second)
    assert figures.requests == 207
    assert figures.errors == 15
    assert figures.error_rate == pytest.approx(15 / 207)
    # 100 of 207 under 50ms, the rest in (0.2, 0.5]: rank 204.93 -> 0.2 + 0.3 * 104.93/107
    assert figures.p99_latency_ms == pytest.approx((0.2 + 0.3 * (0.99 * 207 - 100) / 107) * 1000)


def test_a_restarted_pod_counts_from_zero():
    a, b = Pod(), Pod()
    a.serve(500, 0.03)
    b.serve(100, 0.03)
    with pod_server(a) as url_a, pod_server(b) as url_b:
        targets = {"pod-a": url_a, "pod-b": url_b}
        first = scrape(targets)
        a.restart()
        a.serve(20, 0.03, code="500")
        b.serve(30, 0.03)
        second = scrape(targets)
    figures = figures_between(first, second)
    assert figures.requests == 50  # 20 since the restart + 30, not 20 - 500
    assert figures.errors == 20
    assert figures.p99_latency_ms == pytest.approx(0.05 * (0.99 * 50 / 50) * 1000)


def test_an_unreachable_pod_is_reported_not_raised():
    pod = Pod()
    pod.serve(10, 0.03)
    dead = closed_port_url()
    with pod_server(pod) as url:
        snapshot = scrape([url, dead], timeout=1)
        missing = scrape([url.replace("/metrics", "/nothing")], timeout=1)
    assert list(snapshot.pods) == [url]
    assert dead in snapshot.failures and snapshot.failures[dead]
    assert "404" in missing.failures[url.replace("/metrics", "/nothing")]
    assert figures_between(None, snapshot).requests == 10
    assert figures_between(snapshot, scrape([dead], timeout=1)) is None


def test_no_traffic_gives_zero_requests_and_no_p99():
    pod = Pod()
    with pod_server(pod) as url:
        before, after = scrape([url]), scrape([url])
    figures = figures_between(before, after)
    assert figures.requests == 0 and figures.error_rate is None
    assert figures.p99_latency_ms is None


def test_snapshot_round_trips_through_json():
    pod = Pod()
    pod.serve(3, 0.3)
    with pod_server(pod) as url:
        snapshot = scrape({"p": url, "gone": closed_port_url()}, timeout=1)
    again = Snapshot.from_dict(json.loads(json.dumps(snapshot.to_dict())))
    assert again == snapshot
    assert math.inf in again.pods["p"].buckets


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ({}, None),
        ({1.0: 5}, None),  # no +Inf bucket
        ({0.1: 0, math.inf: 0}, None),
        ({0.1: 100, math.inf: 100}, 0.099),
        ({0.1: 50, 0.2: 100, math.inf: 100}, 0.198),
        ({0.1: 0, 0.2: 0, math.inf: 10}, 0.2),  # in +Inf: the largest finite bound
        ({math.inf: 10}, None),
        ({0.1: 100, 0.2: 90, math.inf: 100}, 0.099),  # non-monotonic counts are evened out
    ],
)
def test_histogram_quantile(buckets, expected):
    result = histogram_quantile(0.99, buckets)
    assert result == (None if expected is None else pytest.approx(expected))


# A fake Prometheus: /api/v1/query answers from a table keyed by the query.
ANSWERS: dict[str, tuple[int, dict]] = {}


def vector(*values: float) -> tuple[int, dict]:
    result = [
        {"metric": {"i": str(i)}, "value": [1700000000, str(v)]} for i, v in enumerate(values)
    ]
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


class PrometheusHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        parts = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(parts.query).get("query", [""])[0]
        if parts.path != "/api/v1/query":
            code, body = 404, {"status": "error", "errorType": "not_found", "error": "no route"}
        else:
            code, body = ANSWERS.get(query, vector())
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    ANSWERS.clear()
    with http_server(PrometheusHandler) as url:
        yield url


def test_query_prometheus_reads_one_number(prometheus):
    ANSWERS["up"] = vector(1)
    ANSWERS["scalar(2.5)"] = (
        200,
        {"status": "success", "data": {"resultType": "scalar", "result": [1700000000, "2.5"]}},
    )
    ANSWERS["nan"] = vector(float("nan"))
    assert query_prometheus(prometheus, "up") == 1.0
    assert query_prometheus(prometheus + "/", "scalar(2.5)") == 2.5
    assert math.isnan(query_prometheus(prometheus, "nan"))


def test_query_prometheus_errors_name_the_query(prometheus):
    ANSWERS["up{"] = (
        400,
        {"status": "error", "errorType": "bad_data", "error": "parse error: unexpected end"},
    )
    ANSWERS["up"] = vector(1, 0)
    ANSWERS["string"] = (
        200,
        {"status": "success", "data": {"resultType": "string", "result": [0, "x"]}},
    )
    with pytest.raises(PrometheusError, match=r"query 'up\{': bad_data: parse error"):
        query_prometheus(prometheus, "up{")
    with pytest.raises(NoData, match="query 'absent_metric' returned no samples"):
        query_prometheus(prometheus, "absent_metric")
    with pytest.raises(PrometheusError, match="returned 2 series"):
        query_prometheus(prometheus, "up")
    with pytest.raises(PrometheusError, match="returned a string"):
        query_prometheus(prometheus, "string")
    with pytest.raises(PrometheusError, match="query 'up': Prometheus at http"):
        query_prometheus(closed_port_url().removesuffix("/metrics"), "up", timeout=1)


def test_prometheus_figures(prometheus):
    promql = standard_queries("team-a", "iris-v2", "1m")
    selector = 'namespace="team-a",track="canary",model_version="iris-v2"'
    assert promql["requests"] == f"sum(increase(flywheel_serve_requests_total{{{selector}}}[1m]))"
    assert 'code=~"5.."' in promql["errors"]
    assert promql["p99"].startswith("histogram_quantile(0.99, sum by (le) (rate(")
    ANSWERS[promql["requests"]] = vector(400)
    ANSWERS[promql["errors"]] = vector(8)
    ANSWERS[promql["p99"]] = vector(0.12)
    ANSWERS["max(drift_score)"] = vector(0.3)
    queries = [
        MetricQuery(name="drift", query="max(drift_score)", max=0.5),
        MetricQuery(name="missing", query="absent_metric", max=1),
    ]
    figures = prometheus_figures(prometheus, "team-a", "iris-v2", "1m", queries)
    assert figures.requests == 400 and figures.errors == 8
    assert figures.error_rate == pytest.approx(0.02)
    assert figures.p99_latency_ms == pytest.approx(120)
    assert figures.queries == {"drift": 0.3}
    assert "returned no samples" in figures.query_errors["missing"]


def test_prometheus_figures_without_canary_series(prometheus):
    promql = standard_queries("team-a", "iris-v2", "2m")
    assert prometheus_figures(prometheus, "team-a", "iris-v2", "2m") is None
    ANSWERS[promql["requests"]] = vector(50)  # no 5xx series, no histogram yet
    figures = prometheus_figures(prometheus, "team-a", "iris-v2", "2m")
    assert figures.requests == 50 and figures.errors == 0 and figures.p99_latency_ms is None
