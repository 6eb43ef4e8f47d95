"""Objects the apiserver accepts but that cannot work: each must end in
Ready=False with a reason and a message that says what to fix, and none may
crash the operator or make it loop (its status stops changing)."""

from __future__ import annotations

import time

import pytest
from kube_helpers import RESYNC_SECONDS, wait_for
from kubernetes import client

pytestmark = pytest.mark.integration
LR = "sklearn.linear_model.LogisticRegression"


def dataset(name, uri, **source):
    return {
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {"source": {"uri": uri, "format": "csv", **source}},
    }


def run(name, trainer=None, dataset_name="iris", **spec):
    body = {"datasetRef": {"name": dataset_name}, **spec}
    if "container" not in spec:
        body["trainer"] = {"estimator": LR, **(trainer or {})}
    return {"kind": "TrainingRun", "metadata": {"name": name}, "spec": body}


def model(name, **source):
    return {
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": {"modelName": "semantic", "source": source},
    }


def service(name, stable, **spec):
    return {
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"stable": {"modelVersion": stable}, **spec},
    }


REGISTER = {"modelName": "semantic"}
# (object, Ready reason, words the message must contain)
CASES = [
    (dataset("no-bucket", "s3://no-such-bucket-7f3a/iris/"), None, "no-such-bucket-7f3a"),
    (dataset("no-file", "file:///nonexistent/flywheel/iris.csv"), None, "/nonexistent/flywheel"),
    (dataset("no-host", "http://127.0.0.1:9/iris.csv"), "SourceUnreachable", "127.0.0.1:9"),
    (
        dataset("no-secret", "s3://flywheel-data/iris/", credentials={"secretName": "absent"}),
        "CreateContainerConfigError",
        "Secret or ConfigMap",
    ),
    (run("no-dataset", dataset_name="absent"), "DatasetNotFound", "spec.datasetRef.name"),
    (
        run("typo-estimator", {"estimator": "sklearn.linear_model.LogisticRegresion"}),
        "UnknownEstimator",
        "LogisticRegresion",
    ),  # fmt: skip
    (
        run("bad-hyperparameter", {"hyperparameters": {"n_trees": 5}}),
        "InvalidHyperparameters",
        "n_trees",
    ),  # fmt: skip
    (run("regression-metric", {"metrics": ["rmse"]}), "MetricNotApplicable", "rmse"),
    (run("no-target", {"targetColumn": "colour"}), None, "colour"),
    (
        run(
            "gate-unlogged",
            register={
                **REGISTER,
                "gates": [{"metric": "f1_weighted", "op": ">=", "threshold": 0.5}],
            },
        ),
        "GateFailed",
        "f1_weighted was not logged",
    ),  # fmt: skip
    (
        run("beat-unlogged", register={**REGISTER, "mustBeatProduction": "roc_auc_ovr"}),
        "GateFailed",
        "roc_auc_ovr was not logged",
    ),
    (run("old-version", datasetRef=None), None, None),  # replaced below
    (
        run("no-image", container={"image": "registry.example/nope:1", "command": ["train"]}),
        "ImagePullBackOff",
        "check the image name",
    ),
    (
        run(
            "no-secret-env",
            env=[
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "token"}}}
            ],
        ),
        "CreateContainerConfigError",
        "Secret or ConfigMap",
    ),  # fmt: skip
    (
        run("no-node", scheduling={"nodeSelector": {"flywheel.dev/pool": "none-such"}}),
        "Unschedulable",
        "(spec.scheduling sets its nodeSelector and tolerations",
    ),
    (model("no-run", trainingRun="absent"), "TrainingRunNotFound", "spec.source.trainingRun"),
    (
        model("no-mlflow-run", mlflowRunId="0" * 32, artifactUri="runs:/" + "0" * 32 + "/model"),
        None,
        "0000",
    ),
    (service("no-stable", "absent"), "ModelVersionNotFound", "spec.stable.modelVersion"),
    (
        service("no-canary", "waiting-model", canary={"modelVersion": "absent"}),
        "ModelVersionNotFound",
        "spec.canary.modelVersion",
    ),
    (service("not-servable", "waiting-model"), "ModelNotServable", "waiting-model"),
    (
        service("other-namespace", "iris-v1-elsewhere"),
        "ModelVersionNotFound",
        "in namespace",
    ),
]
# A pinned dataset version the Dataset is not at.
CASES[11] = (
    {
        "kind": "TrainingRun",
        "metadata": {"name": "old-version"},
        "spec": {"datasetRef": {"name": "iris", "version": "0123456789ab"},
                 "trainer": {"estimator": LR}},
    },
    "DatasetVersionUnavailable",
    "0123456789ab",
)  # fmt: skip

PLURALS = {
    "Dataset": "datasets",
    "TrainingRun": "trainingruns",
    "ModelVersion": "modelversions",
    "InferenceService": "inferenceservices",
}


def ready_of(objects, namespace, kind, name):
    status = objects.get(namespace, kind, name).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)


def test_wrong_but_admitted_objects_say_what_to_fix(
    operator, objects, namespace, iris, kube_api, mlflow_server
):
    assert len(CASES) >= 20
    # A ModelVersion that exists, but in another namespace: not visible here.
    other = f"{namespace}-other"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    objects.create(other, model("iris-v1-elsewhere", mlflowRunId="1" * 32))
    # A ModelVersion waiting for a TrainingRun that never succeeds.
    objects.create(namespace, run("never", {"estimator": "nope.Nope"}))
    objects.create(namespace, model("waiting-model", trainingRun="never"))
    for body, _, _ in CASES:
        objects.create(namespace, body)

    def settled(body, reason, words):
        kind, name = body["kind"], body["metadata"]["name"]
        ready = ready_of(objects, namespace, kind, name)
        if ready is None or ready["status"] != "False":
            return None
        if reason and ready["reason"] != reason:
            return None
        if words and words not in ready["message"]:
            return None
        return ready

    pending = list(CASES)
    deadline = time.monotonic() + 300
    while pending and time.monotonic() < deadline:
        pending = [case for case in pending if not settled(*case)]
        time.sleep(1)
    report = {
        case[0]["metadata"]["name"]: ready_of(objects, namespace, case[0]["kind"],
                                              case[0]["metadata"]["name"])
        for case in pending
    }  # fmt: skip
    assert not pending, f"not settled with the expected reason/message: {report}"

    # No loop: once settled, a few resyncs write nothing more.
    versions = {
        (b["kind"], b["metadata"]["name"]): objects.get(
            namespace, b["kind"], b["metadata"]["name"]
        )["metadata"]["resourceVersion"]
        for b, _, _ in CASES
        if b["kind"] != "Dataset"  # snapshot retries may legitimately retry
    }
    time.sleep(RESYNC_SECONDS * 4)
    moved = [
        key
        for key, version in versions.items()
        if objects.get(namespace, *key)["metadata"]["resourceVersion"] != version
    ]
    assert not moved, f"status kept changing: {moved}"
    assert operator.process.poll() is None  # alive, and serving the others
    core.delete_namespace(other)


def test_a_fixed_object_recovers(operator, objects, namespace, iris):
    objects.create(namespace, run("needs-secret", env=[{"name": "TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "late", "key": "token"}}}]))  # fmt: skip
    wait_for(
        lambda: (
            (r := ready_of(objects, namespace, "TrainingRun", "needs-secret"))
            and r["reason"] == "CreateContainerConfigError"
        ),
        timeout=120,
        what="the missing Secret to be named",
    )
    core = client.CoreV1Api(objects.api.api_client)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="late"), string_data={"token": "x"}),
    )
    wait_for(
        lambda: (
            (objects.get(namespace, "TrainingRun", "needs-secret").get("status") or {}).get("phase")
            == "Succeeded"
        ),
        timeout=180,
        what="the run to train once the Secret exists",
    )
