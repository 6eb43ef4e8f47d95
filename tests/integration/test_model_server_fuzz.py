"""`flywheel serve` (the real process, two workers) under bad requests:
generated bodies for both protocols, near-valid and nonsense, and raw bytes.
A bad request is the client's fault, so it is a 4xx naming the problem, never
a 500; the server never dies; and a flood of oversized and malformed bodies
leaves its memory where it was (bodies over 64 MiB get a 413)."""

from __future__ import annotations

import http.client
import json
import secrets
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_server_process import log_iris_classifier, rss_bytes, running, serve_env
from serving_helpers import FEATURES, iris_frame

pytestmark = pytest.mark.integration

CLIENT_ERRORS = {400, 404, 413, 415, 422}
MAX_BODY = 64 << 20
# Enough that both workers see hundreds of each shape; about a minute here.
EXAMPLES = 400


@pytest.fixture(scope="module")
def server(mlflow_server, tmp_path_factory):
    model_uri = log_iris_classifier(mlflow_server, f"fuzz-{secrets.token_hex(4)}")
    tmp_path = tmp_path_factory.mktemp("fuzz-server")
    with running(serve_env(tmp_path, mlflow_server, model_uri), tmp_path) as running_server:
        yield running_server


class Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, url: str) -> None:
        self.host, _, port = url.removeprefix("http://").partition(":")
        self.port = int(port)
        self.codes: Counter[int] = Counter()
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def post(self, path: str, body: bytes, content_type: str = "application/json"):
        headers = {"Content-Type": content_type}
        for attempt in range(2):
            try:
                self.connection.request("POST", path, body=body, headers=headers)
                answer = self.connection.getresponse()
                payload = answer.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt:
                    raise
        self.codes[answer.status] += 1
        return answer.status, payload


# --- what gets sent ---------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)
names = st.sampled_from(FEATURES) | st.text(max_size=12)
cells = scalars | st.lists(scalars, max_size=3)
records = st.lists(st.dictionaries(names, cells, max_size=5), max_size=5)
rows = st.lists(st.lists(cells, max_size=5), max_size=5)
invocations = st.one_of(
    json_values,
    st.fixed_dictionaries({"dataframe_records": records | json_values}),
    st.fixed_dictionaries({"dataframe_split": st.fixed_dictionaries(
        {"columns": st.lists(names, max_size=5) | json_values, "data": rows | json_values},
        optional={"index": json_values},
    )}),
    st.fixed_dictionaries({"instances": rows | records | json_values}),
    st.fixed_dictionaries(
        {"inputs": st.dictionaries(names, st.lists(cells, max_size=4)) | rows | json_values}
    ),
    st.fixed_dictionaries({"dataframe_records": records}, optional={"params": json_values}),
)  # fmt: skip
datatypes = st.sampled_from(["FP64", "FP32", "FP16", "INT64", "INT8", "UINT8", "BOOL", "BYTES"])
tensors = st.fixed_dictionaries(
    {
        "name": names,
        "shape": st.lists(st.integers(min_value=-3, max_value=2**40), max_size=3) | json_values,
        "datatype": datatypes | st.text(max_size=6) | json_values,
        "data": st.lists(cells, max_size=8) | json_values,
    },
    optional={"parameters": json_values},
)
v2 = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"inputs": st.lists(tensors, max_size=5) | json_values},
        optional={"id": json_values, "parameters": json_values, "outputs": json_values},
    ),
)
paths = st.sampled_from(["/invocations", "/v2/models/iris/infer"])
raw = st.binary(max_size=300) | st.text(max_size=200).map(str.encode)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/csv", "",
     "application/x-www-form-urlencoded"]
)  # fmt: skip


# --- tests ------------------------------------------------------------------


def check_answer(status: int, payload: bytes, sent: bytes) -> None:
    assert status in CLIENT_ERRORS | {200}, (status, payload[:300], sent[:300])
    answer = json.loads(payload)
    if status != 200:
        message = answer.get("message") or answer.get("error")
        assert isinstance(message, str) and message, answer


def test_generated_bad_requests_are_4xx_and_the_server_keeps_serving(server):
    client = Client(server.url)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(body=invocations)
    def invocations_bodies(body):
        sent = json.dumps(body).encode()
        check_answer(*client.post("/invocations", sent), sent)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(body=v2)
    def v2_bodies(body):
        sent = json.dumps(body).encode()
        check_answer(*client.post("/v2/models/iris/infer", sent), sent)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(path=paths, body=raw, content_type=content_types)
    def raw_bodies(path, body, content_type):
        check_answer(*client.post(path, body, content_type), body)

    invocations_bodies()
    v2_bodies()
    raw_bodies()
    sent = sum(client.codes.values())
    print(f"fuzzed {sent} requests: {dict(sorted(client.codes.items()))}")
    assert server.process.poll() is None, server.output()
    assert server.call("GET", "/v2/health/ready") == (200, {"ready": True})
    assert "Traceback" not in server.output(), server.output()[-3000:]


def test_oversized_and_malformed_floods_are_refused_with_flat_memory(server):
    client = Client(server.url)
    good = json.dumps({"instances": iris_frame()[0].head(3).to_numpy().tolist()}).encode()
    oversized = b'{"instances": [' + b"1.0," * (MAX_BODY // 4) + b"1.0]}"
    malformed = b'{"instances": [[' * 100_000

    def flood(rounds: int) -> None:
        for _ in range(rounds):
            status, payload = client.post("/invocations", oversized)
            assert status == 413 and b"64 MiB" in payload, (status, payload[:200])
            assert client.post("/v2/models/iris/infer", oversized)[0] == 413
            assert client.post("/invocations", malformed)[0] == 400
            assert client.post("/invocations", good)[0] == 200

    flood(2)  # warm: every allocator arena the path uses has been touched
    before = rss_bytes(server.process.pid)
    flood(20)
    after = rss_bytes(server.process.pid)
    refused = client.codes[413]
    print(f"RSS of the server and its workers: {before >> 20} MiB before, {after >> 20} MiB after "
          f"{refused} bodies over 64 MiB and {client.codes[400]} malformed ones")  # fmt: skip
    assert refused == 44
    # Each worker may hold one request's body at a time (64 MiB at most); growth
    # beyond that would mean refused bodies are kept.
    assert after - before < MAX_BODY, (before, after)
    assert server.call("GET", "/v2/health/ready") == (200, {"ready": True})
