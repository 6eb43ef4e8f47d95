"""Datasets end to end: the operator's snapshot Job runs `flywheel dataset-snapshot`
for real (on the pod-runner node), against the real object store, and the
operator reads the result from the pod's termination message."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from kube_helpers import wait_for
from kubernetes import client
from sample_data import IRIS_COLUMNS as COLUMNS
from sample_data import iris_csv

pytestmark = pytest.mark.integration

SECRET_VALUE = "s3cr3t-never-shown-7731"


def dataset(name, uri, columns=None, data_format="csv", **spec):
    schema = {
        "target": "species",
        "columns": columns
        or [
            {"name": c, "type": "float", "nullable": False, "min": 0, "max": 20}
            for c in COLUMNS[:4]
        ]
        + [
            {
                "name": "species",
                "type": "string",
                "allowedValues": ["setosa", "versicolor", "virginica"],
            }
        ],
    }
    return {
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {"source": {"uri": uri, "format": data_format}, "schema": schema, **spec},
    }


@pytest.fixture
def data_bucket(object_store, namespace):
    bucket = object_store.make_bucket(f"data-{namespace}")
    object_store.client().put_object(Bucket=bucket, Key="iris/iris.csv", Body=iris_csv())
    return bucket


def ready_or_failed(objects, namespace, name):
    status = objects.get(namespace, "Dataset", name).get("status") or {}
    return status if status.get("phase") in ("Ready", "Failed") else None


def events(kube_api, namespace, name):
    items = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
    return [(e.type, e.reason, e.message) for e in items if e.involved_object.name == name]


def test_snapshot_versions_validates_and_profiles(
    operator, objects, namespace, artifact_secret, data_bucket, object_store, kube_api
):
    objects.create(namespace, dataset("iris", f"s3://{data_bucket}/iris/"))
    status = wait_for(lambda: ready_or_failed(objects, namespace, "iris"), timeout=120)
    assert status["phase"] == "Ready", status
    assert len(status["version"]) == 64 and status["rows"] == 150
    assert status["profile"]["columns"] == 5 and status["validation"]["passed"] is True
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and status["version"][:12] in ready["message"]
    # The full profile is where status says, in the artifact store.
    bucket, key = status["profileUri"].removeprefix("s3://").split("/", 1)
    profile = object_store.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert b"sepal_length" in profile

    # Same bytes, same version: a spec change re-snapshots without a new version.
    first = status["version"]
    objects.patch(namespace, "Dataset", "iris", {"spec": {"quality": {"minRows": 10}}})
    status = wait_for(
        lambda: (
            (s := ready_or_failed(objects, namespace, "iris"))
            and s["snapshot"]["sequence"] == 2
            and s["snapshot"]["state"] != "Running"
            and s
        ),
        timeout=120,
    )
    assert status["version"] == first

    # Any change of bytes: a new version, and an Event that says so.
    changed = iris_csv().replace(b"5.1,3.5", b"5.2,3.5", 1)
    object_store.client().put_object(Bucket=data_bucket, Key="iris/iris.csv", Body=changed)
    objects.patch(namespace, "Dataset", "iris", {"spec": {"quality": {"minRows": 20}}})
    status = wait_for(
        lambda: (s := ready_or_failed(objects, namespace, "iris")) and s["version"] != first and s,
        timeout=120,
    )
    assert any(reason == "NewVersion" for _, reason, _ in events(kube_api, namespace, "iris"))


def test_parquet_in_the_object_store_is_profiled_as_its_csv_is(
    operator, objects, namespace, artifact_secret, object_store
):
    # The same rows as Parquet (three row groups) and as CSV, side by side.
    store = object_store.client()
    bucket = object_store.make_bucket(f"formats-{namespace}")
    parquet = pa.BufferOutputStream()
    pq.write_table(pacsv.read_csv(io.BytesIO(iris_csv())), parquet, row_group_size=50)
    parquet_bytes = parquet.getvalue().to_pybytes()
    store.put_object(Bucket=bucket, Key="parquet/iris.parquet", Body=parquet_bytes)
    store.put_object(Bucket=bucket, Key="csv/iris.csv", Body=iris_csv())
    objects.create(namespace, dataset("iris-pq", f"s3://{bucket}/parquet/", data_format="parquet"))
    objects.create(namespace, dataset("iris-csv", f"s3://{bucket}/csv/"))

    done = {n: wait_for(lambda n=n: ready_or_failed(objects, namespace, n), timeout=120)
            for n in ("iris-pq", "iris-csv")}  # fmt: skip

    assert done["iris-pq"]["phase"] == "Ready", done["iris-pq"]
    assert done["iris-pq"]["rows"] == 150 and done["iris-pq"]["validation"]["passed"] is True
    # The version is the content hash of the object's bytes, as for CSV.
    digest = hashlib.sha256(parquet_bytes).hexdigest()
    line = json.dumps(["iris.parquet", len(parquet_bytes), digest])
    assert done["iris-pq"]["version"] == hashlib.sha256(f"{line}\n".encode()).hexdigest()

    def columns(status):
        bucket, key = status["profileUri"].removeprefix("s3://").split("/", 1)
        profile = json.loads(store.get_object(Bucket=bucket, Key=key)["Body"].read())
        return {c["name"]: c for c in profile["columnProfiles"]}

    from_parquet, from_csv = columns(done["iris-pq"]), columns(done["iris-csv"])
    assert from_parquet.keys() == from_csv.keys() == set(COLUMNS)
    for name, column in from_csv.items():
        # Means may differ in the last digit: sums depend on the batches' layout.
        floats = {k for k, v in column.items() if isinstance(v, float)}
        exact = {k: v for k, v in column.items() if k not in floats}
        assert {k: v for k, v in from_parquet[name].items() if k not in floats} == exact, name
        close = {k: from_parquet[name].get(k) for k in floats}
        assert close == pytest.approx({k: column[k] for k in floats}, rel=1e-12), name


def test_bad_data_names_rule_and_column(operator, objects, namespace, artifact_secret, data_bucket):
    columns = [{"name": c, "type": "float", "nullable": False} for c in COLUMNS[:4]] + [
        {"name": "species", "type": "string", "allowedValues": ["setosa", "versicolor"]},
        {"name": "weight", "type": "float"},
    ]
    objects.create(namespace, dataset("strict", f"s3://{data_bucket}/iris/", columns))
    status = wait_for(lambda: ready_or_failed(objects, namespace, "strict"), timeout=120)
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ValidationFailed"
    assert "'weight'" in ready["message"] and "'species'" in ready["message"]
    rules = {(f["rule"], f.get("column")) for f in status["validation"]["failures"]}
    assert ("allowedValues", "species") in rules


def test_bad_credentials_and_unreachable_source(
    operator, objects, namespace, artifact_secret, data_bucket, kube_api
):
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="wrong-keys"),
        data={
            "AWS_ACCESS_KEY_ID": base64.b64encode(b"NOSUCHKEY").decode(),
            "AWS_SECRET_ACCESS_KEY": base64.b64encode(SECRET_VALUE.encode()).decode(),
        },
    )
    client.CoreV1Api(kube_api).create_namespaced_secret(namespace, secret)
    denied = dataset("denied", f"s3://{data_bucket}/iris/")
    denied["spec"]["source"]["credentials"] = {"secretName": "wrong-keys"}
    objects.create(namespace, denied)
    unreachable = dataset("gone", "s3://nowhere/iris/")
    unreachable["spec"]["source"]["endpoint"] = "http://127.0.0.1:9"  # discard port: refused
    objects.create(namespace, unreachable)

    for name, reason in (("denied", "AccessDenied"), ("gone", "SourceUnreachable")):
        # An unreachable store is waited for: ~30 s in each pod (storage.with_retries),
        # three pods (the snapshot Job's backoffLimit 2, 10 s and 20 s apart).
        status = wait_for(lambda n=name: ready_or_failed(objects, namespace, n), timeout=360)
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (status["phase"], ready["reason"]) == ("Failed", reason), ready
        said = str(status) + str(events(kube_api, namespace, name))
        assert SECRET_VALUE not in said
