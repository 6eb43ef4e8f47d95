"""`flywheel demo`: narrate the closed loop on the samples as it happens.

`make demo` starts everything and applies manifests/demo/ (the samples, sped
up); this command only watches and sends traffic. It waits for each step in
the objects' status (and the InferenceService's Events), prints it with the
time since it started, and stops with a non-zero exit naming what it waited
for when a step stalls.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import click

GROUP, VERSION = "mlops.flywheel.dev", "v1alpha1"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
# How far the "new sensor" moves the measurements (cm): most features drift.
SHIFT = {"petal_length": 3.0, "petal_width": 1.5, "sepal_length": 2.0}


class Stalled(Exception):
    """A step did not happen in time."""


# ------------------------------------------------------------- pure helpers


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"[{minutes:02d}:{secs:02d}]"


def short(version: str | None) -> str:
    return f"{version[:8]}…" if version and len(version) > 8 else version or "?"


def dataset_line(name: str, status: Mapping[str, Any]) -> str:
    validation = status.get("validation") or {}
    verdict = "validated" if validation.get("passed", True) else "validation failed"
    version, rows = short(status.get("version")), status.get("rows")
    return f"Dataset {name}: version {version}, {rows} rows, {verdict}"


def metrics_text(metrics: Mapping[str, float] | None) -> str:
    return ", ".join(f"{key} {value:.3f}" for key, value in sorted((metrics or {}).items()))


def model_line(name: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    aliases = ", ".join(status.get("aliases") or []) or "none"
    return (
        f"ModelVersion {name}: registered as {spec.get('modelName')} version "
        f"{status.get('registryVersion')} (aliases: {aliases}), {status.get('phase')}"
    )


def service_line(name: str, status: Mapping[str, Any]) -> str:
    stable = status.get("stable") or {}
    return (
        f"InferenceService {name}: Ready, {status.get('servingModelVersion')} on "
        f"{stable.get('readyReplicas', 0)}/{stable.get('replicas', 0)} replicas"
    )


def traffic_line(codes: Mapping[int, int]) -> str:
    total = sum(codes.values())
    if not total:
        return "requests served: 0"
    if set(codes) == {200}:
        return f"requests served: {total}, all 200"
    detail = ", ".join(f"{code or 'no connection'}: {n}" for code, n in sorted(codes.items()))
    return f"requests served: {total} ({detail})"


def drift_line(drift: Mapping[str, Any]) -> str:
    result = drift.get("result")
    if result != "Drift":
        message = drift.get("message")
        return f"drift check {drift.get('job')}: {result}" + (f" ({message})" if message else "")
    drifted = [f["name"] for f in drift.get("features") or [] if f.get("drifted")]
    return (
        f"drift detected: {drift.get('share', 0):.0%} of features drifted "
        f"({', '.join(drifted)}); report {drift.get('reportUri')}"
    )


def event_line(reason: str, message: str) -> str | None:
    """An Event worth telling; None for the condition-change echoes
    ("Ready=True: ...") that repeat what the event of the step said."""
    head = message.split(":", 1)[0]
    if "=" in head and head.split("=", 1)[1] in ("True", "False", "Unknown"):
        return None
    return f"  event {reason}: {message}"


def shifted(frame):
    """The same flowers, measured by a new sensor: most features moved."""
    moved = frame.copy()
    for column, delta in SHIFT.items():
        moved[column] = moved[column] + delta
    return moved


def stalled_message(what: str, timeout: float, where: list[str]) -> str:
    lines = [f"timed out after {timeout:.0f}s waiting for {what}.", "Look at:"]
    return "\n".join(lines + [f"  {place}" for place in where])


def request_bodies(frame, rows_per_request: int = 2) -> list[bytes]:
    """MLflow `dataframe_split` bodies of a few rows each."""
    chunks = (frame.iloc[i : i + rows_per_request] for i in range(0, len(frame), rows_per_request))
    return [
        json.dumps({"dataframe_split": json.loads(c.to_json(orient="split", index=False))}).encode()
        for c in chunks
    ]


# ----------------------------------------------------------------- traffic


class Traffic:
    """Clients of the InferenceService's umbrella Service.

    There is no kube-proxy on the local cluster, so requests go straight to the
    ready pods the Service's EndpointSlices list; on a real cluster a client
    would call the Service URL (status.url) instead."""

    def __init__(self, kube, namespace: str, service: str, frame):
        from kubernetes import client

        self.discovery = client.DiscoveryV1Api(kube)
        self.namespace, self.service = namespace, service
        self.codes: Counter[int] = Counter()
        self.bodies = request_bodies(frame)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def endpoints(self) -> list[str]:
        slices = self.discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=f"kubernetes.io/service-name={self.service}"
        ).items
        found = []
        for piece in slices:
            port = next((p.port for p in piece.ports or [] if p.name == "http"), None)
            for endpoint in piece.endpoints or []:
                if port and endpoint.conditions and endpoint.conditions.ready:
                    found += [f"{address}:{port}" for address in endpoint.addresses]
        return found

    def _run(self) -> None:
        sent, addresses, refreshed = 0, [], 0.0
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 1:
                try:
                    addresses = self.endpoints()
                except Exception:
                    addresses = []
                refreshed = time.monotonic()
            if not addresses:
                time.sleep(0.2)
                continue
            self._post(random.choice(addresses), self.bodies[sent % len(self.bodies)])
            sent += 1
            time.sleep(0.03)

    def _post(self, address: str, body: bytes) -> None:
        request = urllib.request.Request(
            f"http://{address}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                self.codes[answer.status] += 1
        except urllib.error.HTTPError as err:
            self.codes[err.code] += 1
        except OSError:
            self.codes[0] += 1  # connection refused: a pod going away


# ---------------------------------------------------------------- narrator


class Demo:
    # Who sends the traffic: a cluster with kube-proxy can use one that calls the
    # Service itself (tests/node/e2e_loop.py does).
    traffic = Traffic

    def __init__(self, namespace: str, operator_log: str, kubectl: str):
        from kubernetes import client, config

        config.load_kube_config()
        self.kube = client.ApiClient()
        self.custom = client.CustomObjectsApi(self.kube)
        self.core = client.CoreV1Api(self.kube)
        self.namespace, self.operator_log, self.kubectl = namespace, operator_log, kubectl
        self.started = time.monotonic()
        self.seen_events: set[str] = set()
        self.drift_report: str | None = None

    def say(self, line: str) -> None:
        print(f"{clock(time.monotonic() - self.started)} {line}", flush=True)

    def get(self, plural: str, name: str) -> dict[str, Any]:
        from kubernetes.client import ApiException

        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )
        except ApiException as err:
            if err.status == 404:
                return {}
            raise

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return self.get(plural, name).get("status") or {}

    def wait(
        self,
        what: str,
        probe: Callable[[], Any],
        timeout: float,
        look: str,
        tick: Callable[[], None] | None = None,
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found:
                return found
            if tick:
                tick()
            if time.monotonic() > deadline:
                where = [
                    f"{self.kubectl} -n {self.namespace} {look}",
                    f"the operator's log: {self.operator_log}",
                ]
                raise Stalled(stalled_message(what, timeout, where))
            time.sleep(1)

    def service_events(self) -> list[Any]:
        items = self.core.list_namespaced_event(
            self.namespace, field_selector="involvedObject.name=iris"
        ).items
        return sorted(items, key=lambda e: e.metadata.creation_timestamp)

    def new_events(self, reasons: set[str]) -> None:
        for event in self.service_events():
            if event.metadata.uid in self.seen_events or event.reason not in reasons:
                continue
            self.seen_events.add(event.metadata.uid)
            line = event_line(event.reason, event.message or "")
            if line:
                self.say(line)

    # ------------------------------------------------------------ the story
    def run(self) -> None:
        ns = self.namespace
        self.say(
            f"namespace {ns}: Dataset iris, TrainingRun iris-rf, ModelVersion iris-v1, "
            "InferenceService iris (manifests/samples, sped up by manifests/demo: drift "
            "check every minute, logs flushed every 5 s, canary analysed every 5 s)"
        )
        data = self.wait(
            "Dataset iris to be Ready (its snapshot Job)",
            lambda: (s := self.status("datasets", "iris")).get("phase") == "Ready" and s,
            240,
            "describe dataset iris",
        )
        self.say(dataset_line("iris", data))

        running = self.wait(
            "TrainingRun iris-rf to start",
            lambda: (s := self.status("trainingruns", "iris-rf")).get("mlflowRunId") and s,
            240,
            "describe trainingrun iris-rf",
        )
        self.say(f"training iris-rf (built-in trainer, RandomForestClassifier) in Job "
                 f"{running.get('jobName')}, MLflow run {running.get('mlflowRunId')}")  # fmt: skip
        trained = self.wait_run("iris-rf", 600)
        self.say(
            f"TrainingRun iris-rf: Succeeded in {trained.get('durationSeconds')}s "
            f"({metrics_text(trained.get('metrics'))}); gates passed, created ModelVersion "
            f"{trained.get('modelVersion')}"
        )
        self.say(f"  MLflow run: {trained.get('mlflowRunUrl')}")
        registered = self.wait(
            "ModelVersion iris-v1 to be registered and Servable",
            lambda: self.status("modelversions", "iris-v1").get("phase") == "Servable",
            240,
            "describe modelversion iris-v1",
        )
        assert registered
        self.say(model_line("iris-v1", self.get("modelversions", "iris-v1")["spec"],
                            self.status("modelversions", "iris-v1")))  # fmt: skip
        ready = self.wait(
            "InferenceService iris to be Ready (its model servers)",
            lambda: (s := self.status("inferenceservices", "iris")).get("phase") == "Ready" and s,
            300,
            "describe inferenceservice iris",
        )
        self.say(service_line("iris", ready))
        first = ready.get("servingModelVersion")
        self.serve_and_shift(first)

    def wait_run(self, name: str, timeout: float) -> dict[str, Any]:
        done = self.wait(
            f"TrainingRun {name} to finish",
            lambda: (
                (s := self.status("trainingruns", name)).get("phase") in ("Succeeded", "Failed")
                and s
            ),
            timeout,
            f"describe trainingrun {name}",
        )
        if done["phase"] != "Succeeded" or not done.get("modelVersion"):
            reason = next(
                (c.get("message") for c in done.get("conditions") or [] if c["type"] == "Ready"),
                "",
            )
            raise Stalled(f"TrainingRun {name} ended {done['phase']} without a model: {reason}")
        return done

    def serve_and_shift(self, first: str) -> None:
        from sklearn.datasets import load_iris

        frame = load_iris(as_frame=True).data.set_axis(FEATURES, axis=1)
        normal = self.traffic(self.kube, self.namespace, "iris", frame).start()
        self.wait(
            "requests to be answered",
            lambda: sum(normal.codes.values()) >= 100,
            60,
            "get endpointslices",
        )
        normal.stop()
        self.say(f"normal traffic (iris rows as in training): {traffic_line(normal.codes)}")

        batch = shifted(frame.sample(60, random_state=1).reset_index(drop=True))
        self.say(
            "now a shifted batch: a new sensor reports petals +3.0/+1.5 cm and sepals "
            "+2.0 cm longer; sending it continuously while the loop runs"
        )
        # What happened before is told already; from here Events tell the rollout.
        self.seen_events.update(e.metadata.uid for e in self.service_events())
        traffic = self.traffic(self.kube, self.namespace, "iris", batch).start()
        last_check: list[Any] = [None]
        service = lambda: self.status("inferenceservices", "iris")  # noqa: E731

        def checks() -> None:
            drift = service().get("drift") or {}
            if drift.get("lastCheckTime") and drift.get("lastCheckTime") != last_check[0]:
                last_check[0] = drift["lastCheckTime"]
                if drift.get("result") != "Drift":
                    self.say(drift_line(drift))

        try:
            drift = self.wait(
                "a drift check to flag the shifted traffic (the drift CronJob runs every minute)",
                lambda: (d := service().get("drift") or {}).get("result") == "Drift" and d,
                300,
                "describe inferenceservice iris; kubectl get cronjobs,jobs",
                tick=checks,
            )
            self.drift_report = drift.get("reportUri")
            self.say(drift_line(drift))
            self.say(f"  traffic so far: {traffic_line(traffic.codes)}")
            retrain = self.wait(
                "the operator to start a retraining TrainingRun",
                lambda: (service().get("retrain") or {}).get("last"),
                120,
                "describe inferenceservice iris",
            )
            self.say(
                f"retraining started: TrainingRun {retrain} clones iris-rf onto the newest data"
            )
            done = self.wait_run(retrain, 600)
            retrained = done["modelVersion"]
            self.say(
                f"TrainingRun {retrain}: Succeeded on data {short(done.get('datasetVersion'))} "
                f"({metrics_text(done.get('metrics'))}); gates passed"
            )
            self.say(f"  MLflow run: {done.get('mlflowRunUrl')}")
            self.wait(
                f"ModelVersion {retrained} to be registered",
                lambda: self.status("modelversions", retrained).get("phase") == "Servable",
                240,
                f"describe modelversion {retrained}",
            )
            self.say(
                "retrained model "
                + model_line(
                    retrained,
                    self.get("modelversions", retrained)["spec"],
                    self.status("modelversions", retrained),
                )
            )
            steps = {"CanaryStarted", "CanaryAdvanced", "CanaryCheckFailed", "Promoted"}
            steps |= {"RolledBack", "Serving"}
            self.wait(
                f"{retrained} to start as the canary",
                lambda: (service().get("canary") or {}).get("modelVersion") == retrained,
                300,
                "describe inferenceservice iris",
                tick=lambda: self.new_events(steps),
            )
            final = self.wait(
                f"the canary {retrained} to be promoted",
                lambda: (s := service()).get("servingModelVersion") not in (None, first) and s,
                300,
                "describe inferenceservice iris",
                tick=lambda: self.new_events(steps),
            )
            self.new_events(steps)
        finally:
            traffic.stop()
        verdict = ((final.get("analysis") or {}).get("history") or [{}])[-1]
        self.say(
            f"promoted: {final['servingModelVersion']} now serves as stable (replaced "
            f"{verdict.get('replaced', first)}); MLflow alias production moved"
        )
        self.say(f"shifted traffic: {traffic_line(traffic.codes)}")
        ready = next((c for c in final.get("conditions") or [] if c["type"] == "Ready"), {})
        self.say(f"GitOps: {ready.get('message')}")

    def epilogue(self) -> None:
        tracking = os.environ.get("MLFLOW_TRACKING_URI", "(MLFLOW_TRACKING_URI)")
        print()
        print(f"MLflow UI:     {tracking}  (experiments, runs, the registered model iris)")
        print(f"Drift report:  {self.drift_report}  (in the object store)")
        print(f"Operator log:  {self.operator_log}")
        command = [*shlex.split(self.kubectl), "-n", self.namespace, "get", "flywheel"]
        print(f"$ kubectl -n {self.namespace} get flywheel")
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        print(result.stdout.rstrip() or result.stderr.rstrip())
        print()
        print(f"kubectl:  {self.kubectl} -n {self.namespace} describe inferenceservice iris")
        print("Stop:     make demo-down")


@click.command("demo")
@click.option("--namespace", "-n", default="flywheel-demo", show_default=True)
@click.option(
    "--operator-log", default=".cache/operator.log", show_default=True, help="Named when stalled."
)
@click.option(
    "--kubectl", default="kubectl", show_default=True, help="How to call kubectl (with flags)."
)
def demo_command(namespace: str, operator_log: str, kubectl: str) -> None:
    """Narrate the closed loop on the samples in NAMESPACE (see `make demo`)."""
    demo = Demo(namespace, operator_log, kubectl)
    try:
        demo.run()
    except Stalled as err:
        demo.say(str(err))
        sys.exit(1)
    demo.epilogue()
