"""The loop's two other steps, timed on the bench's control plane:
drift verdict -> retraining TrainingRun, and canary verdict -> promotion.

kwok runs no workload pod here (the node is tainted and the operator's pods do
not tolerate it), so the bench plays the node's part, and only that part:

- drift: it starts a check Job from the operator's own CronJob (as
  `kubectl create job --from=cronjob/...` does) and, as a kubelet would,
  writes the check pod's exit: Succeeded, with the drift verdict as its
  termination message. The Job controller then completes the Job; from that
  moment the verdict is there for the operator to read.
- canary: it marks the canary Deployment's pods Running and Ready at a
  loopback address where a real `flywheel serve` of the canary model answers
  (and is sent traffic), so the operator's scrape reads real counters. The
  verdict is due when the analysis window's interval has passed.

Each step is timed from the bench's own watches (the moment it saw the verdict
available, or due, to the moment it saw the result), so both ends carry the
same watch delay. Times are the operator's: no Job or pod work is in them.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

from bench_report import percentile
from common import VENV_BIN, Child, clean_env, log, start, stop, wait_ready

# A loopback address no one else binds: the canary pods' "IP", where the
# canary's model server listens on the port the operator scrapes.
CANARY_ADDRESS = "127.0.0.77"
CANARY_INTERVAL_S = 5  # the analysis interval: long enough for > 10 requests
STEP_TIMEOUT = 120.0


def drift_to_retrain(bench, api, ns: str, source_run: str, repeats: int) -> dict[str, Any]:
    """`repeats` InferenceServices with drift checks and a retrain policy; one
    check each finishes with a Drift verdict; time until its retraining
    TrainingRun exists. `bench` is operator_scale, for its client and watcher."""
    from flywheel.builders.drift import drift_cronjob_name

    call, watcher, _custom = bench._call, bench.Watcher, bench.custom_path
    _wait = functools.partial(bench.wait_for, timeout=STEP_TIMEOUT)
    services = [f"drift-{i}" for i in range(repeats)]
    for name in services:
        body = bench.inference_service(name)
        # Once a year: the only check is the one the bench starts.
        drift = {"schedule": "0 0 1 1 *", "reference": {"dataset": "data"}}
        body["spec"]["monitoring"] = {"drift": drift}
        body["spec"]["retrain"] = {"fromTrainingRun": source_run}
        call(api, "POST", _custom(ns, "inferenceservices"), body)
    cronjobs = {
        s: _wait(
            f"the drift CronJob of {s}",
            lambda s=s: _get(
                api, call, f"/apis/batch/v1/namespaces/{ns}/cronjobs/{drift_cronjob_name(s)}"
            ),
        )
        for s in services
    }
    jobs = watcher(api, f"/apis/batch/v1/namespaces/{ns}/jobs", by_owner=False, when=_job_complete)
    runs = watcher(api, _custom(ns, "trainingruns"), by_owner=True)
    checks = {}
    for service, cronjob in cronjobs.items():
        job = _job_from(cronjob, f"{service}-check-bench")
        call(api, "POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job)
        checks[service] = job["metadata"]["name"]
    for job in checks.values():
        pod = _wait(f"the pod of {job}", lambda job=job: _job_pod(api, call, ns, job))
        _finish_check(api, call, ns, pod, _drift_verdict())
    _wait_all(lambda: all(runs.first_seen.get(s) for s in services))
    jobs.stop()
    runs.stop()
    seconds = []
    for service, job in checks.items():
        available = jobs.reached.get(job)
        created = (runs.first_seen.get(service) or [None])[0]
        seconds.append(created - available if available and created else None)
    for service in services:
        call(api, "DELETE", _custom(ns, "inferenceservices", service))
    return _summary("drift verdict (check Job complete) -> retraining TrainingRun created", seconds)


def canary_to_promotion(
    bench, api, ns: str, model_spec: dict[str, Any], model_uri: str, tracking_uri: str,
    repeats: int,
) -> dict[str, Any]:  # fmt: skip
    """`repeats` InferenceServices roll out one canary ModelVersion at 50% in
    one step; time from the check falling due to the stable Deployment
    carrying the canary's model. The check itself scrapes the real server's
    counters; `verdicts` keeps what each decided, and on what figures."""
    from flywheel.builders.serving import selector, track_name

    call, watcher, _custom = bench._call, bench.Watcher, bench.custom_path
    _wait = functools.partial(bench.wait_for, timeout=STEP_TIMEOUT)
    canary = "promote-canary"
    call(api, "POST", _custom(ns, "modelversions"), {**model_spec, "metadata": {"name": canary}})
    _wait(
        "the canary ModelVersion to be Servable",
        lambda: (call(api, "GET", _custom(ns, "modelversions", canary)).get("status") or {}).get(
            "servable"
        ),
    )
    server = _canary_server(canary, model_uri, tracking_uri)
    traffic = _Traffic(f"http://{CANARY_ADDRESS}:8080/invocations")
    services = [f"promote-{i}" for i in range(repeats)]
    window_starts: dict[str, str] = {}
    verdicts: dict[str, str] = {}

    def note_window(obj: dict[str, Any]) -> bool:
        name, analysis = obj["metadata"]["name"], (obj.get("status") or {}).get("analysis") or {}
        if analysis.get("windowStart") and analysis.get("modelVersion") == canary:
            window_starts[name] = analysis["windowStart"]
        last = (analysis.get("history") or [{}])[-1]
        if last.get("modelVersion") == canary:
            verdicts[name] = f"{last.get('verdict')}: {last.get('reason')}"
        return False

    parents = watcher(api, _custom(ns, "inferenceservices"), by_owner=False, when=note_window)
    stables = {track_name(s, "stable"): s for s in services}
    deployments = watcher(
        api, f"/apis/apps/v1/namespaces/{ns}/deployments", by_owner=False,
        when=lambda d: d["metadata"]["name"] in stables and _serves(d, canary),
    )  # fmt: skip
    try:
        for name in services:
            body = bench.inference_service(name)
            body["spec"]["canary"] = {
                "modelVersion": canary,
                "analysis": {
                    "stepPercent": 50,
                    "maxPercent": 50,
                    "interval": f"{CANARY_INTERVAL_S}s",
                },
            }
            call(api, "POST", _custom(ns, "inferenceservices"), body)
        marked: set[str] = set()

        def promoted_all() -> bool:
            # Pods the ReplicaSet made since: as a kubelet, mark them Ready.
            for service in services:
                for pod in _pods(api, call, ns, selector(service, "canary")):
                    if pod["metadata"]["name"] not in marked:
                        _mark_ready(api, call, ns, pod)
                        marked.add(pod["metadata"]["name"])
            return all(deployments.reached.get(s) for s in stables)

        _wait_all(promoted_all)
    finally:
        traffic.stop()
        parents.stop()
        deployments.stop()
        stop(server)
    seconds = []
    for stable, service in stables.items():
        promoted = deployments.reached.get(stable)
        opened = window_starts.get(service)
        if promoted is None or opened is None:
            seconds.append(None)
            continue
        due = _epoch(opened) + CANARY_INTERVAL_S
        # The watch's monotonic clock, moved onto the wall clock the stamp uses.
        promoted_wall = promoted + (time.time() - time.monotonic())
        seconds.append(promoted_wall - due)
    for service in services:
        call(api, "DELETE", _custom(ns, "inferenceservices", service))
    call(api, "DELETE", _custom(ns, "modelversions", canary))
    result = _summary("canary check due -> promotion applied (stable Deployment)", seconds)
    result["requests_sent"] = traffic.sent
    result["verdicts"] = [verdicts.get(s) for s in services]
    result["note"] = (
        "due = status.analysis.windowStart + interval, the operator's own rule "
        "(windowStart is stamped to the second)"
    )
    return result


# --- drift -----------------------------------------------------------------------------


def _job_from(cronjob: dict[str, Any], name: str) -> dict[str, Any]:
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    meta = template.get("metadata") or {}
    manual = {"cronjob.kubernetes.io/instantiate": "manual"}  # as kubectl marks it
    meta.update(
        name=name,
        annotations={**(meta.get("annotations") or {}), **manual},
        ownerReferences=[
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": cronjob["metadata"]["name"],
                "uid": cronjob["metadata"]["uid"],
                "controller": True,
            }
        ],
    )
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": template["spec"]}


def _drift_verdict() -> dict[str, Any]:
    """What `flywheel drift-check` writes as its termination message on drift."""
    features = [
        {"name": f"f{i}", "score": 0.001 if i < 12 else 0.4, "drifted": i < 12} for i in range(20)
    ]
    return {
        "ok": True,
        "result": "Drift",
        "share": 0.6,
        "threshold": 0.5,
        "rows": {"current": 100000, "reference": 100000},
        "features": features,
    }


def _finish_check(api, call, ns: str, pod: dict[str, Any], message: dict[str, Any]) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    container = pod["spec"]["containers"][0]
    status = {
        "phase": "Succeeded",
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "message": json.dumps(message),
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
        ],
    }
    path = f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}/status"
    call(api, "PATCH", path, {"status": status})


def _job_complete(job: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Complete" and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _job_pod(api, call, ns: str, job: str) -> dict[str, Any] | None:
    pods = _pods(api, call, ns, {"batch.kubernetes.io/job-name": job})
    return pods[0] if pods else None


# --- canary ----------------------------------------------------------------------------


def _canary_server(canary: str, model_uri: str, tracking_uri: str) -> Child:
    """A real model server for the canary track, where the pods' "IP" points."""
    env = clean_env(
        MLFLOW_TRACKING_URI=tracking_uri,
        FLYWHEEL_MODEL_URI=model_uri,
        FLYWHEEL_MODEL_NAME="bench-operator",
        FLYWHEEL_MODEL_VERSION=canary,
        FLYWHEEL_TRACK="canary",
        FLYWHEEL_PORT="8080",
        FLYWHEEL_BIND_ADDRESS=CANARY_ADDRESS,
        FLYWHEEL_WORKERS="1",
    )
    child = start("canary-server", [str(VENV_BIN / "flywheel"), "serve"], env, None)
    wait_ready(child, f"http://{CANARY_ADDRESS}:8080/v2/health/ready")
    return child


class _Traffic:
    """20 requests a second to the canary, so every interval has > 10."""

    BODY = json.dumps(
        {
            "dataframe_split": {
                "columns": [
                    "sepal length (cm)",
                    "sepal width (cm)",
                    "petal length (cm)",
                    "petal width (cm)",
                ],
                "data": [[5.1, 3.5, 1.4, 0.2]],
            }
        }
    ).encode()

    def __init__(self, url: str) -> None:
        self.url, self.sent, self.stopping = url, 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import urllib.request

        while not self.stopping:
            request = urllib.request.Request(
                self.url, self.BODY, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=5) as answer:
                answer.read()
            self.sent += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(timeout=10)


def _mark_ready(api, call, ns: str, pod: dict[str, Any]) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [
        {"type": kind, "status": "True", "lastTransitionTime": now}
        for kind in ("Initialized", "ContainersReady", "Ready")
    ]
    status = {
        "phase": "Running",
        "podIP": CANARY_ADDRESS,
        "podIPs": [{"ip": CANARY_ADDRESS}],
        "startTime": now,
        "conditions": conditions,
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod["spec"]["containers"]
        ],
    }
    path = f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}/status"
    call(api, "PATCH", path, {"status": status})


def _serves(deployment: dict[str, Any], model_version: str) -> bool:
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        for env in container.get("env") or []:
            if env.get("name") == "FLYWHEEL_MODEL_VERSION" and env.get("value") == model_version:
                return True
    return False


# --- shared ----------------------------------------------------------------------------


def _get(api, call, path: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return call(api, "GET", path)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _pods(api, call, ns: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    query = [("labelSelector", selector)]
    return call(api, "GET", f"/api/v1/namespaces/{ns}/pods", query=query)["items"]


def _wait_all(check, timeout: float = STEP_TIMEOUT) -> None:
    """Until `check` holds or the timeout: what is missing then is reported, not raised."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not check():
        time.sleep(0.2)


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _summary(step: str, seconds: list[float | None]) -> dict[str, Any]:
    measured = [x for x in seconds if x is not None]
    log(f"operator: {step}: {[round(x, 3) if x is not None else None for x in seconds]}")
    return {
        "step": step,
        "seconds": seconds,
        "p50_s": percentile(measured, 50) if measured else None,
        "max_s": max(measured) if measured else None,
        "missing": len(seconds) - len(measured),
        "timeout_s": STEP_TIMEOUT,
    }
