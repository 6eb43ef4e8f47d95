"""A store that is down for a moment is waited for inside the pod; a store
that says no is not (storage.with_retries)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from flywheel.workloads.storage import s3_transient, with_retries

REFUSED = EndpointConnectionError(endpoint_url="http://127.0.0.1:9000/b")


def client_error(code: str, status: int) -> ClientError:
    body = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(body, "ListObjectsV2")


def failing(times: int, error: Exception):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "listed"

    return call, calls


def test_the_store_coming_back_within_the_waits_is_not_noticed():
    waits: list[float] = []
    call, calls = failing(3, REFUSED)
    assert (
        with_retries(call, "listing s3://b/", delays=(1, 2, 4, 8), sleep=waits.append) == "listed"
    )
    assert waits == [1, 2, 4] and len(calls) == 4  # doubling, and no more tries than needed


def test_a_store_down_longer_ends_with_its_error():
    waits: list[float] = []
    call, calls = failing(10, REFUSED)
    with pytest.raises(EndpointConnectionError):
        with_retries(call, "listing s3://b/", delays=(1, 2), sleep=waits.append)
    assert waits == [1, 2] and len(calls) == 3


@pytest.mark.parametrize(
    "error", [client_error("AccessDenied", 403), client_error("NoSuchKey", 404)]
)
def test_a_refusal_is_not_retried(error):
    waits: list[float] = []
    call, calls = failing(1, error)
    with pytest.raises(ClientError):
        with_retries(call, "reading s3://b/k", delays=(1, 2), sleep=waits.append)
    assert waits == [] and len(calls) == 1


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (REFUSED, True),
        (client_error("ServiceUnavailable", 503), True),
        (client_error("InternalError", 500), True),
        (client_error("SlowDown", 503), True),
        (client_error("AccessDenied", 403), False),
        (client_error("NoSuchBucket", 404), False),
        (ValueError("not a store error"), False),
    ],
)
def test_which_errors_are_worth_another_try(error, transient):
    assert s3_transient(error) is transient
