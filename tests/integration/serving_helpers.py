"""What the serving tests share: models logged to the real MLflow, and client
traffic that reaches the model servers the way a Service or a Gateway would.

There is no kube-proxy or Gateway controller on the test cluster, so `Traffic`
plays their part from the outside: it reads the EndpointSlices the real
controller-manager keeps for the Services (and, for the gateway-api router,
the HTTPRoute's backend weights) and spreads requests accordingly.
"""

from __future__ import annotations

import json
import random
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import mlflow
import pandas as pd
from kubernetes import client
from mlflow.models import infer_signature
from sklearn.datasets import load_iris

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BROKEN_MODEL = textwrap.dedent(
    """
    import mlflow
    from mlflow.pyfunc import PythonModel


    class Broken(PythonModel):
        '''A model that fails every prediction: a canary that must not be promoted.'''

        def predict(self, context, model_input, params=None):
            raise RuntimeError("this model fails on purpose")


    mlflow.models.set_model(Broken())
    """
)


def iris_frame() -> tuple[pd.DataFrame, pd.Series]:
    bunch = load_iris(as_frame=True)
    frame = bunch.data.set_axis(FEATURES, axis=1)
    return frame, pd.Series(bunch.target_names[bunch.target], name="species")


def log_sklearn_model(tracking_uri: str, experiment: str, estimator) -> tuple[str, str]:
    """Fit and log a model in its own run; (run id, model URI)."""
    x, y = iris_frame()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        model = estimator.fit(x, y)
        mlflow.log_metric("accuracy", float(model.score(x, y)))
        info = mlflow.sklearn.log_model(model, name="model", input_example=x.head(3))
    return run.info.run_id, info.model_uri


def log_broken_model(tracking_uri: str, experiment: str, workdir: Path) -> tuple[str, str]:
    x, y = iris_frame()
    code = workdir / "broken_model.py"
    code.write_text(BROKEN_MODEL)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code), signature=infer_signature(x, y)
        )
    return run.info.run_id, info.model_uri


def fast_analysis(**overrides) -> dict:
    """A canary analysis a test can wait out: one 4 s check a step, 50% at most."""
    return {
        "interval": "4s",
        "stepPercent": 50,
        "maxPercent": 50,
        "checksPerStep": 1,
        "failureLimit": 2,
        "thresholds": {"maxErrorRate": 0.05},
        **overrides,
    }


def model_version(name: str, model: str, run_id: str, uri: str) -> dict:
    return {
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": {
            "modelName": model,
            "source": {"mlflowRunId": run_id, "artifactUri": uri},
            "approval": "auto",
        },
    }


class Traffic:
    """Client load on an InferenceService, routed as its router would route it."""

    def __init__(self, kube_api, namespace: str, service: str, router: str = "service", rows=None):
        self.core = client.CoreV1Api(kube_api)
        self.discovery = client.DiscoveryV1Api(kube_api)
        self.custom = client.CustomObjectsApi(kube_api)
        self.namespace, self.service, self.router = namespace, service, router
        self.codes: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._rows = iris_frame()[0].head(2) if rows is None else rows

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def endpoints(self, service: str) -> list[str]:
        slices = self.discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=f"kubernetes.io/service-name={service}"
        ).items
        addresses = []
        for piece in slices:
            port = next((p.port for p in piece.ports or [] if p.name == "http"), None)
            for endpoint in piece.endpoints or []:
                if endpoint.conditions and endpoint.conditions.ready and port:
                    addresses += [f"{address}:{port}" for address in endpoint.addresses]
        return addresses

    def _backends(self) -> list[tuple[int, list[str]]]:
        if self.router == "service":
            return [(1, self.endpoints(self.service))]
        route = self.custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", self.service
        )
        refs = route["spec"]["rules"][0]["backendRefs"]
        return [(ref.get("weight", 1), self.endpoints(ref["name"])) for ref in refs]

    def _run(self) -> None:
        # Requests of 2 rows each, cycling through the rows given.
        bodies = [
            json.dumps(
                {"dataframe_split": json.loads(chunk.to_json(orient="split", index=False))}
            ).encode()
            for chunk in (self._rows.iloc[i : i + 2] for i in range(0, len(self._rows), 2))
        ]
        sent = 0
        backends, refreshed = [], 0.0
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 1:
                try:
                    backends = [b for b in self._backends() if b[0] > 0 and b[1]]
                except client.ApiException:
                    backends = []
                refreshed = time.monotonic()
            if not backends:
                time.sleep(0.2)
                continue
            weights = [weight for weight, _ in backends]
            _, addresses = random.choices(backends, weights=weights)[0]
            self._post(random.choice(addresses), bodies[sent % len(bodies)])
            sent += 1
            time.sleep(0.03)

    def _post(self, address: str, body: bytes) -> None:
        request = urllib.request.Request(
            f"http://{address}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                self.codes[answer.status] += 1
        except urllib.error.HTTPError as err:
            self.codes[err.code] += 1
        except OSError:
            self.codes[0] += 1  # connection refused: a pod going away


def shifted_rows():
    """Iris measurements as a new sensor reports them: most features moved."""
    frame = iris_frame()[0].sample(60, random_state=1).reset_index(drop=True)
    frame["petal_length"] += 3.0
    frame["petal_width"] += 1.5
    frame["sepal_length"] += 2.0
    return frame
