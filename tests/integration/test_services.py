"""The local infrastructure works as a user of S3 and MLflow expects it to.

The object store is a real S3-compatible server (versitygw) and the tracking
server a real `mlflow server` whose artifacts land in that store; both are
started by tests/services (or reused when a developer started them).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def bucket(object_store):
    """A new bucket, emptied and removed after the test."""
    name = object_store.make_bucket(f"t-{secrets.token_hex(6)}")
    yield name
    s3 = object_store.client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:  # at most 1000 per page, the DeleteObjects limit
            s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=name)


def error_of(excinfo) -> tuple[int, str]:
    response = excinfo.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


# --------------------------------------------------------------------------- S3


def test_put_list_get_round_trip(object_store, bucket):
    s3 = object_store.client()
    body = b"sepal_length,species\n5.1,setosa\n"
    s3.put_object(
        Bucket=bucket, Key="data/iris.csv", Body=body,
        ContentType="text/csv", Metadata={"dataset-version": "v1"},
    )  # fmt: skip

    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("data/iris.csv", len(body))]
    got = s3.get_object(Bucket=bucket, Key="data/iris.csv")
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/csv"
    assert got["Metadata"] == {"dataset-version": "v1"}
    assert got["ETag"].strip('"') == hashlib.md5(body).hexdigest()

    s3.put_object(Bucket=bucket, Key="data/iris.csv", Body=b"replaced")
    assert s3.get_object(Bucket=bucket, Key="data/iris.csv")["Body"].read() == b"replaced"
    s3.delete_object(Bucket=bucket, Key="data/iris.csv")
    with pytest.raises(ClientError) as gone:
        s3.get_object(Bucket=bucket, Key="data/iris.csv")
    assert error_of(gone) == (404, "NoSuchKey")


def test_multipart_upload_of_more_than_8_mib(object_store, bucket):
    s3 = object_store.client()
    data = os.urandom(20 * MiB)
    parts = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    s3.upload_fileobj(io.BytesIO(data), bucket, "models/model.bin", Config=parts)

    head = s3.head_object(Bucket=bucket, Key="models/model.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a 3-part upload
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    downloaded = io.BytesIO()
    s3.download_fileobj(bucket, "models/model.bin", downloaded, Config=parts)
    assert hashlib.sha256(downloaded.getvalue()).digest() == hashlib.sha256(data).digest()
    # A range that spans the boundary between part 1 and part 2.
    start = 8 * MiB - 10
    ranged = s3.get_object(
        Bucket=bucket, Key="models/model.bin", Range=f"bytes={start}-{start + 19}"
    )
    assert ranged["Body"].read() == data[start : start + 20]


def test_listing_more_than_1000_keys_under_a_prefix_is_paginated(object_store, bucket):
    s3 = object_store.client()
    keys = [f"batch/part-{i:05d}.parquet" for i in range(1050)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"other/{i}", Body=b"y")

    first = s3.list_objects_v2(Bucket=bucket, Prefix="batch/")
    assert first["KeyCount"] == 1000 and first["IsTruncated"] is True
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="batch/"))
    listed = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert len(pages) == 2
    assert listed == keys  # every key once, in order, none from other/

    small = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="batch/", PaginationConfig={"PageSize": 400}
    )
    assert [page["KeyCount"] for page in small] == [400, 400, 250]
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["batch/", "other/"]


def test_wrong_credentials_are_refused(object_store, bucket):
    s3 = object_store.client()
    s3.put_object(Bucket=bucket, Key="secret.txt", Body=b"only for the owner")

    stranger = object_store.client(access_key="FWNOSUCHKEY000000000", secret_key="whatever")
    with pytest.raises(ClientError) as unknown:
        stranger.get_object(Bucket=bucket, Key="secret.txt")
    assert error_of(unknown) == (403, "InvalidAccessKeyId")

    wrong_secret = object_store.client(secret_key="not-the-secret")
    with pytest.raises(ClientError) as bad_signature:
        wrong_secret.put_object(Bucket=bucket, Key="planted.txt", Body=b"x")
    assert error_of(bad_signature) == (403, "SignatureDoesNotMatch")

    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    anonymous = boto3.client(
        "s3", endpoint_url=object_store.endpoint_url, region_name=object_store.region,
        config=Config(signature_version=UNSIGNED),
    )  # fmt: skip
    with pytest.raises(ClientError) as no_signature:
        anonymous.list_objects_v2(Bucket=bucket)
    assert error_of(no_signature)[0] == 403

    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["secret.txt"]


# ----------------------------------------------------------------------- MLflow


def run_as_user(mlflow_server, tmp_path, script: str, **env: str) -> dict:
    """Run `script` in a fresh Python whose environment has the tracking URI and
    nothing else: no S3 endpoint, no AWS keys, no ~/.aws. It prints one JSON line."""
    clean = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=clean, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


TRACK = """
import json, os
import mlflow

mlflow.set_experiment(os.environ["EXPERIMENT"])
with mlflow.start_run(run_name="baseline") as run:
    mlflow.log_params({"C": 0.5, "estimator": "LogisticRegression"})
    for step, accuracy in enumerate([0.71, 0.84, 0.93]):
        mlflow.log_metric("accuracy", accuracy, step=step)
    mlflow.log_text("feature,importance\\npetal_length,0.61\\n", "reports/importance.csv")
    weights = os.path.join(os.getcwd(), "weights.bin")
    with open(weights, "wb") as out:
        out.write(bytes(range(256)) * (9 * 4096))  # 9 MiB: the server uploads it in parts
    mlflow.log_artifact(weights, "model")
back = mlflow.artifacts.download_artifacts(
    run_id=run.info.run_id, artifact_path="reports/importance.csv"
)
print(json.dumps({
    "run_id": run.info.run_id,
    "experiment_id": run.info.experiment_id,
    "artifact_uri": run.info.artifact_uri,
    "downloaded": open(back).read(),
}))
"""


def test_tracking_with_artifacts_proxied_into_the_object_store(mlflow_server, tmp_path):
    experiment = f"iris-{secrets.token_hex(4)}"
    user = run_as_user(mlflow_server, tmp_path, TRACK, EXPERIMENT=experiment)
    report = "feature,importance\npetal_length,0.61\n"
    assert user["downloaded"] == report
    assert user["artifact_uri"].startswith("mlflow-artifacts:")  # proxied, not direct S3

    client = mlflow_server.client()
    run = client.get_run(user["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params == {"C": "0.5", "estimator": "LogisticRegression"}
    assert run.data.metrics == {"accuracy": 0.93}
    history = client.get_metric_history(run.info.run_id, "accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.71), (1, 0.84), (2, 0.93)]
    assert client.get_experiment_by_name(experiment).experiment_id == user["experiment_id"]
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert listed == {"model", "reports"}

    # The artifacts really are objects in the bucket behind the server.
    s3 = mlflow_server.store.client()
    run_prefix = f"artifacts/{user['experiment_id']}/{user['run_id']}/artifacts/"
    objects = {
        o["Key"].removeprefix(run_prefix): o
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=mlflow_server.bucket, Prefix=run_prefix
        )
        for o in page.get("Contents", [])
    }
    assert set(objects) == {"reports/importance.csv", "model/weights.bin"}
    body = s3.get_object(Bucket=mlflow_server.bucket, Key=run_prefix + "reports/importance.csv")
    assert body["Body"].read().decode() == report
    weights = objects["model/weights.bin"]
    assert weights["Size"] == 9 * MiB
    assert "-" in weights["ETag"]  # a multipart upload by the server's boto3


REGISTER = """
import json, os
import mlflow
import numpy as np
from sklearn.linear_model import LogisticRegression

name = os.environ["MODEL"]
rng = np.random.default_rng(0)
X = rng.normal(size=(60, 4))
y = (X[:, 0] + X[:, 1] > 0).astype(int)
model = LogisticRegression().fit(X, y)
mlflow.set_experiment(os.environ["EXPERIMENT"])
with mlflow.start_run() as run:
    info = mlflow.sklearn.log_model(
        model, name="model", registered_model_name=name, pip_requirements=["scikit-learn"]
    )
version = info.registered_model_version
client = mlflow.MlflowClient()
client.set_registered_model_alias(name, "candidate", version)
loaded = mlflow.pyfunc.load_model(f"models:/{name}@candidate")
print(json.dumps({
    "version": str(version),
    "run_id": run.info.run_id,
    "experiment_id": run.info.experiment_id,
    "predicted": loaded.predict(X[:5]).tolist(),
    "expected": model.predict(X[:5]).tolist(),
}))
"""


def test_model_registry_versions_and_aliases(mlflow_server, tmp_path):
    name = f"iris-classifier-{secrets.token_hex(4)}"
    user = run_as_user(mlflow_server, tmp_path, REGISTER, MODEL=name, EXPERIMENT=f"registry-{name}")
    assert user["predicted"] == user["expected"]  # loaded back by alias, through the proxy

    client = mlflow_server.client()
    version = client.get_model_version_by_alias(name, "candidate")
    assert (version.version, version.run_id) == (user["version"], user["run_id"])
    assert version.status == "READY"

    client.set_registered_model_alias(name, "production", version.version)
    model = client.get_registered_model(name)
    assert model.aliases == {"candidate": version.version, "production": version.version}
    client.delete_registered_model_alias(name, "candidate")
    assert client.get_registered_model(name).aliases == {"production": version.version}
    assert client.get_model_version_by_alias(name, "production").version == version.version

    # The model's files were stored in the bucket, under the experiment.
    s3 = mlflow_server.store.client()
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=mlflow_server.bucket, Prefix=f"artifacts/{user['experiment_id']}/"
        )
        for o in page.get("Contents", [])
    ]
    assert any(key.endswith("/MLmodel") for key in keys), keys
    assert any(key.endswith("/model.pkl") or key.endswith("/model.skops") for key in keys), keys
