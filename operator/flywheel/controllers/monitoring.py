"""Closing the loop for one InferenceService: the drift CronJob, reading its
checks, starting retraining runs, and offering their models as the canary.

Every check is read once: status.drift.lastCheckTime marks the newest check
taken into account, and a retraining run's name derives from the check's Job,
so an operator that restarts between creating the run and writing status
finds the same run again instead of making a second one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf

from ..api.dataset import DatasetSpec
from ..api.inferenceservice import Analysis, InferenceServiceSpec
from ..builders.drift import build_drift_cronjob, drift_cronjob_name, drift_selector
from ..builders.retrain import build_retrain_run
from ..integrations import children, kube
from ..policy.drift import describe, next_drift_status, read_drift_outcome
from ..policy.jobs import job_finished
from ..policy.retrain import decide_retrain
from ..settings import Settings
from .indexes import lookup

FINISHED = ("Succeeded", "Failed")


@dataclass
class Loop:
    """What monitoring adds to the InferenceService's status this reconcile."""

    fields: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)


def monitor(
    body: Mapping[str, Any],
    spec: InferenceServiceSpec,
    status: Mapping[str, Any],
    serving: Mapping[str, Any],
    datasets: kopf.Index,
    runs: kopf.Index,
    settings: Settings,
    now: datetime,
) -> Loop:
    loop = Loop()
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    drift_spec = spec.monitoring.drift if spec.monitoring else None
    if drift_spec is None:
        if status.get("drift") is not None:
            children.delete("batch/v1", "CronJob", namespace, drift_cronjob_name(name))
            loop.fields["drift"] = None
        _follow_retrains(namespace, spec, dict(status.get("retrain") or {}), runs, loop)
        return loop
    reference_name = (drift_spec.reference and drift_spec.reference.dataset) or serving.get(
        "dataset"
    )
    reference = lookup(datasets, namespace, reference_name) if reference_name else None
    if reference is None:
        what = (
            f"Dataset {reference_name!r} does not exist"
            if reference_name
            else "the serving ModelVersion names no Dataset in its lineage"
        )
        message = f"no drift checks: {what}; set spec.monitoring.drift.reference.dataset"
        loop.fields["drift"] = {**(status.get("drift") or {}), "message": message}
        return loop
    cronjob = build_drift_cronjob(
        body,
        spec,
        DatasetSpec.model_validate(reference["spec"]),
        reference.get("version"),
        settings,
    )
    children.apply(cronjob)
    drift = dict(status.get("drift") or {})
    retrain = dict(status.get("retrain") or {})
    for job in _new_checks(namespace, name, drift.get("lastCheckTime")):
        pods = kube.job_pods(namespace, job["metadata"]["name"])
        outcome = read_drift_outcome(job, pods)
        drift = next_drift_status(drift, outcome, job["metadata"]["name"], _finished_at(job))
        if outcome["result"] == "Drift":
            loop.events.append(("Warning", "DriftDetected", describe(outcome)))
            retrain = _maybe_retrain(body, spec, drift, retrain, serving, runs, loop, now)
        elif outcome["result"] == "Error":
            loop.events.append(("Warning", "DriftCheckFailed", describe(outcome)))
    loop.fields["drift"] = drift
    if retrain:
        loop.fields["retrain"] = retrain
    _follow_retrains(namespace, spec, retrain, runs, loop)
    return loop


def _new_checks(namespace: str, service: str, since: str | None) -> list[dict[str, Any]]:
    """Finished check Jobs newer than the last one read, oldest first."""
    jobs = children.list_objects("batch/v1", "Job", namespace, drift_selector(service))
    finished = [j for j in jobs if job_finished(j) and _finished_at(j)]
    fresh = [j for j in finished if since is None or _finished_at(j) > since]
    return sorted(fresh, key=lambda j: (_finished_at(j), j["metadata"]["name"]))


def _finished_at(job: Mapping[str, Any]) -> str | None:
    status = job.get("status") or {}
    if status.get("completionTime"):
        return status["completionTime"]
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return condition.get("lastTransitionTime")
    return None


def _maybe_retrain(body, spec, drift, retrain, serving, runs, loop: Loop, now) -> dict[str, Any]:
    meta = body["metadata"]
    policy = spec.retrain
    detection = drift["job"]
    if policy is None:
        retrain["message"] = "drift detected; no spec.retrain policy, so no retraining"
        return retrain
    in_flight = [r for r in retrain.get("inFlight") or [] if _running(runs, meta["namespace"], r)]
    decision = decide_retrain(policy, drift, retrain, len(in_flight), now)
    retrain.update(lastDetection=detection, message=decision.reason, inFlight=in_flight or None)
    if not decision.retrain:
        return retrain
    source_name = policy.from_training_run or serving.get("trainingRun")
    source = (
        kube.get_custom(meta["namespace"], "trainingruns", source_name) if source_name else None
    )
    if source is None:
        why = (
            f"TrainingRun {source_name!r} to clone does not exist"
            if source_name
            else "the serving ModelVersion names no TrainingRun"
        )
        retrain["message"] = (
            f"drift detected but cannot retrain: {why}; set spec.retrain.fromTrainingRun"
        )
        loop.events.append(("Warning", "RetrainImpossible", retrain["message"]))
        return retrain
    run = build_retrain_run(body, source, detection, decision.reason)
    kube.ensure_custom(run)
    run_name = run["metadata"]["name"]
    retrain.update(
        triggered=(retrain.get("triggered") or 0) + 1,
        inFlight=[*in_flight, run_name],
        last=run_name,
        lastTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        message=f"{decision.reason}: TrainingRun {run_name} clones {source_name}",
    )
    loop.events.append(
        (
            "Normal",
            "RetrainStarted",
            f"drift check {detection}: TrainingRun {run_name} retrains {source_name}",
        )
    )
    return retrain


def _running(runs: kopf.Index, namespace: str, name: str) -> bool:
    run = lookup(runs, namespace, name)
    return run is not None and run.get("phase") not in FINISHED


def _follow_retrains(namespace, spec, retrain: dict[str, Any], runs, loop: Loop) -> None:
    """Runs that finished leave inFlight; a model that passed its gates becomes
    the candidate (the canary, with autoDeploy canary)."""
    if not retrain.get("inFlight"):
        return
    still = []
    for name in retrain["inFlight"]:
        run = lookup(runs, namespace, name)
        if run is None:
            # Just created runs reach the index a moment later: ask the API.
            found = kube.get_custom(namespace, "trainingruns", name)
            run = None if found is None else {"phase": (found.get("status") or {}).get("phase")}
        if run is not None and run.get("phase") not in FINISHED:
            still.append(name)
            continue
        if run is None:
            retrain["message"] = f"retraining run {name} was deleted"
        elif run.get("phase") == "Failed":
            retrain["message"] = f"retraining run {name} failed; the serving model stays"
            loop.events.append(("Warning", "RetrainFailed", retrain["message"]))
        elif run.get("modelVersion"):
            model = run["modelVersion"]
            if spec.retrain and spec.retrain.auto_deploy == "canary":
                retrain["candidate"] = model
                retrain["message"] = f"retrained model {model} passed its gates: it is the canary"
            else:
                retrain["message"] = (
                    f"retrained model {model} passed its gates; autoDeploy is none: "
                    "set spec.canary.modelVersion to roll it out"
                )
            loop.events.append(("Normal", "RetrainedModel", retrain["message"]))
        else:
            retrain["message"] = (
                f"retraining run {name} produced no model ({run.get('reason')}); "
                "the serving model stays"
            )
            loop.events.append(("Warning", "RetrainGated", retrain["message"]))
    retrain["inFlight"] = still or None
    loop.fields["retrain"] = retrain


def auto_canary(
    spec: InferenceServiceSpec, status: Mapping[str, Any]
) -> tuple[str | None, Analysis]:
    """The canary to analyse: spec.canary, else a retrained model (autoDeploy canary)."""
    if spec.canary:
        return spec.canary.model_version, spec.canary.analysis
    policy = spec.retrain
    candidate = (status.get("retrain") or {}).get("candidate")
    if policy is not None and policy.auto_deploy == "canary" and candidate:
        return candidate, policy.analysis or Analysis()
    return None, Analysis()
