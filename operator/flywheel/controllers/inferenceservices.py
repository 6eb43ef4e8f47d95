"""InferenceService controller: model servers per track, the split, the canary's fate.

Which ModelVersion serves as stable is spec.stable, except after a promotion:
then the promoted canary serves until spec.stable changes. The operator never
edits its own spec (a GitOps repository owns it); status says what to commit
("promoted X: set spec.stable.modelVersion to X and remove spec.canary").
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from ..api.conditions import FALSE, TRUE, ConditionUpdate
from ..api.inferenceservice import InferenceServiceSpec
from ..api.kinds import INFERENCE_SERVICE
from ..builders.serving import (
    PORT,
    ServedModel,
    build_autoscaler,
    build_deployment,
    build_http_route,
    build_service,
    selector,
    track_name,
)
from ..integrations import children, tracking
from ..policy.canary import seconds_until_check
from ..policy.jobs import deployment_has_synced, stuck_pod
from ..policy.traffic import effective_percent, plan_split
from ..settings import Settings
from . import rollout
from .backoff import Backoff
from .handlers import register
from .indexes import lookup
from .monitoring import auto_canary, monitor
from .reconcile import READY, Assessment, accepted, forget_with_object, reconcile
from .refs import Missing, missing_reference

SETTINGS = Settings.from_env()
PRODUCTION = "production"
ALIAS_BACKOFF = Backoff(first=5.0, cap=60.0)
# A deleted InferenceService's canary baseline and alias retries go with it.
forget_with_object(rollout.forget)
forget_with_object(lambda uid: ALIAS_BACKOFF.forget(f"{uid}/"))
GATEWAY_API = "gateway.networking.k8s.io/v1"


def serving_stable(spec: InferenceServiceSpec, status: Mapping[str, Any]) -> str:
    """spec.stable, or the canary promoted over it while spec still names the old one."""
    history = (status.get("analysis") or {}).get("history") or []
    promoted = next((v for v in reversed(history) if v.get("verdict") == "Promoted"), None)
    if promoted and promoted.get("replaced") == spec.stable.model_version:
        return promoted["modelVersion"]
    return spec.stable.model_version


def judged(status: Mapping[str, Any], model_version: str) -> dict[str, Any] | None:
    """The verdict already given on this canary: it is not tried twice."""
    history = (status.get("analysis") or {}).get("history") or []
    return next((v for v in reversed(history) if v.get("modelVersion") == model_version), None)


def assess(
    spec: InferenceServiceSpec,
    body: Mapping[str, Any],
    versions: kopf.Index,
    datasets: kopf.Index,
    runs: kopf.Index,
    settings: Settings = SETTINGS,
    now: datetime | None = None,
) -> Assessment:
    now = now or datetime.now(UTC)
    meta, status = body["metadata"], dict(body.get("status") or {})
    namespace, name = meta["namespace"], meta["name"]
    stable_name = serving_stable(spec, status)
    stable = lookup(versions, namespace, stable_name)
    if stable is None:
        return missing_reference(
            Missing("spec.stable.modelVersion", "ModelVersion", stable_name), namespace
        )
    if spec.canary and lookup(versions, namespace, spec.canary.model_version) is None:
        missing = Missing("spec.canary.modelVersion", "ModelVersion", spec.canary.model_version)
        return missing_reference(missing, namespace)
    if not stable["servable"] or not stable.get("registryVersion"):
        why = f"ModelVersion {stable_name!r} is {stable['phase'] or 'new'}, not Servable yet"
        return Assessment("Pending", [accepted(), _not_ready("ModelNotServable", why)])
    if not settings.mlflow_tracking_uri:
        why = "the operator has no MLflow tracking URI (set MLFLOW_TRACKING_URI on the operator)"
        return Assessment("Pending", [accepted(), _not_ready("MLflowNotConfigured", why)])

    router = spec.traffic.router if spec.traffic else "service"
    if router == "gateway-api" and not children.api_available(GATEWAY_API):
        why = (
            "spec.traffic.router is gateway-api but the cluster has no Gateway API "
            f"({GATEWAY_API}); install its CRDs or use router: service"
        )
        return Assessment("Failed", [accepted(), _not_ready("GatewayAPIMissing", why)])

    fields: dict[str, Any] = {"url": f"http://{name}.{namespace}.svc.cluster.local"}
    events: list[tuple[str, str, str]] = []
    stable_model = _served(stable_name, stable)
    stable_replicas = spec.replicas if spec.replicas is not None else 1
    stable_deployment = _apply_track(body, spec, "stable", stable_model, stable_replicas, settings)
    children.apply(build_service(body, None))
    stable_ready, stable_done = _rollout_state(stable_deployment)
    fields["stable"] = {
        "modelVersion": stable_name,
        "replicas": _desired(stable_deployment),
        "readyReplicas": stable_ready,
    }
    replaced = status.get("servingModelVersion")
    if replaced and replaced != stable_name:
        # A new service says what it serves through its conditions (waiting
        # for pods, then Ready): one Event fewer per object at creation.
        events.append(("Normal", "Serving", f"{stable_name} serves as stable (was {replaced})"))
    fields["servingModelVersion"] = stable_name
    _move_production_alias(meta["uid"], status, fields, events, stable, settings)

    loop = monitor(body, spec, status, stable, datasets, runs, settings, now)
    fields.update(loop.fields)
    events += loop.events
    # The canary: spec.canary's, else a retrained model; never one already judged.
    proposed, analysis_spec = auto_canary(spec, {**status, **loop.fields})
    canary_name = None if proposed and judged(status, proposed) else proposed
    canary = lookup(versions, namespace, canary_name) if canary_name else None

    step = None
    weight = 0
    next_check = None
    if canary_name and canary is not None and canary["servable"] and canary.get("registryVersion"):
        step, weight, canary_fields = _run_canary(
            body, spec, status, canary_name, canary, analysis_spec, stable_replicas, router,
            settings, now,
        )  # fmt: skip
        fields.update(canary_fields)
        window = (fields.get("analysis") or {}).get("windowStart")
        if window and not (step.decision and step.decision.final):
            # The check is due at the end of the interval, not at the next resync.
            next_check = seconds_until_check(window, analysis_spec.interval, now)
        if step.event:
            events.append(step.event)
        if step.decision and step.decision.verdict == "promote":
            return _promoted(body, spec, status, fields, events, canary_name, canary, settings)
        if step.decision and step.decision.verdict == "rollback":
            _remove_canary(body, spec)
            weight = 0
            fields["canary"] = None
    else:
        # No canary (or judged): once the stable rollout is over, its pods go.
        if stable_done and _canary_exists(body):
            _remove_canary(body, spec)
        fields["canary"] = None
        analysis = dict(status.get("analysis") or {})
        if analysis.get("modelVersion"):
            fields["analysis"] = {"history": analysis.get("history")}
    if router == "gateway-api":
        children.apply(build_http_route(body, spec, 100 - weight, weight))
    canary_ready = (fields.get("canary") or {}).get("readyReplicas") or 0
    fields["traffic"] = (
        {"stable": 100 - weight, "canary": weight}
        if router == "gateway-api"
        else {
            "stable": 100 - (share := effective_percent(stable_ready, canary_ready)),
            "canary": share,
        }
    )
    stuck = None
    if stable_ready == 0 and deployment_has_synced(stable_deployment):
        # Why no pod serves: an image, a Secret or a node a person must see
        # to? (A new Deployment has no pods to list yet.)
        pods = children.list_pods(namespace, selector(name, "stable"))
        stuck = stuck_pod(pods, placement_field="spec.scheduling")
    assessment = _verdict(
        proposed, status, fields, events, stable_name, stable_ready, stable_done, canary_name,
        stuck,
    )  # fmt: skip
    assessment.wake_after = next_check
    return assessment


def _run_canary(
    body, spec, status, canary_name, canary, analysis_spec, stable_replicas, router, settings, now
):
    meta = body["metadata"]
    deployment = children.get(
        "apps/v1", "Deployment", meta["namespace"], track_name(meta["name"], "canary")
    )
    ready, done = _rollout_state(deployment) if deployment else (0, False)
    pods = children.list_pods(meta["namespace"], selector(meta["name"], "canary"))
    stuck = None if ready else stuck_pod(pods, placement_field="spec.scheduling")
    step = rollout.analyse(
        meta["uid"], meta["namespace"], canary_name, analysis_spec, status,
        canary_ready=done and ready > 0, pod_urls=_pod_urls(pods), now=now,
        stuck=stuck[1] if stuck else None,
    )  # fmt: skip
    split = plan_split(router, step.weight, stable_replicas)
    fields: dict[str, Any] = {"analysis": step.analysis}
    if step.decision is None or not step.decision.final:
        model = _served(canary_name, canary)
        deployment = _apply_track(body, spec, "canary", model, split.canary_replicas, settings)
        ready, _ = _rollout_state(deployment)
        fields["canary"] = {
            "modelVersion": canary_name,
            "replicas": split.canary_replicas,
            "readyReplicas": ready,
        }
        if split.note:
            fields["analysis"] = {
                **step.analysis,
                "message": f"{step.analysis.get('message')} {split.note}",
            }
    return step, step.weight, fields


def _promoted(body, spec, status, fields, events, canary_name, canary, settings) -> Assessment:
    """The canary becomes stable: roll the stable Deployment to its model (no
    downtime: maxUnavailable 0), move the production alias, keep the canary's
    pods until the stable rollout is done."""
    replaced = serving_stable(spec, status)
    history = fields["analysis"]["history"]
    history[-1]["replaced"] = replaced
    stable_replicas = spec.replicas if spec.replicas is not None else 1
    deployment = _apply_track(
        body, spec, "stable", _served(canary_name, canary), stable_replicas, settings
    )
    _move_production_alias(body["metadata"]["uid"], status, fields, events, canary, settings)
    ready, _ = _rollout_state(deployment)
    fields.update(
        servingModelVersion=canary_name,
        stable={
            "modelVersion": canary_name,
            "replicas": _desired(deployment),
            "readyReplicas": ready,
        },
        traffic={"stable": 100, "canary": 0},
        canary=None,
    )
    commit = _commit_hint(canary_name)
    progressing = ConditionUpdate("Progressing", TRUE, "Promoted", commit)
    ready_condition = ConditionUpdate(READY, TRUE, "Promoted", commit)
    return Assessment("Progressing", [accepted(), ready_condition, progressing], fields, events)


def _verdict(
    proposed, status, fields, events, stable_name, stable_ready, stable_done, canary_name,
    stuck=None,
):  # fmt: skip
    """Phase and conditions from what the reconcile found, most urgent first."""
    desired = fields["stable"]["replicas"] or 0
    analysis = fields.get("analysis") or status.get("analysis") or {}
    history = analysis.get("history") or []
    last = history[-1] if history else None
    if stable_ready == 0 and desired > 0:
        served_before = ((status.get("stable") or {}).get("readyReplicas") or 0) > 0
        if served_before:
            phase, why = "Degraded", f"no ready model-server pod for {stable_name}: calls fail"
        else:
            phase, why = "Pending", f"waiting for a ready model-server pod for {stable_name}"
        reason = "NoReadyReplicas"
        if stuck:
            reason, why = stuck[0], f"{why}: {stuck[1]}"
        conditions = [_not_ready(reason, why), _progressing(phase == "Pending", phase, why)]
        return Assessment(phase, [accepted(), *conditions], fields, events)
    if canary_name and fields.get("canary"):
        phase, active, reason = "Progressing", True, "CanaryAnalysis"
        why = f"{stable_name} serves; canary {canary_name}: {analysis.get('message') or 'starting'}"
    elif not stable_done:
        phase, active, reason = "Progressing", True, "RollingOut"
        why = f"rolling out {stable_name} ({stable_ready}/{desired} ready)"
    elif last and proposed == last["modelVersion"]:
        # The canary spec names was judged; say what a person should commit.
        phase, active, reason = "Ready", False, last["verdict"]
        if last["verdict"] == "Promoted":
            why = _commit_hint(stable_name)
        else:
            why = f"canary {last['modelVersion']} rolled back ({last.get('reason')})"
            why += f"; {stable_name} serves"
    else:
        phase, active, reason = "Ready", False, "Serving"
        why = f"{stable_name} serves with {stable_ready}/{desired} ready replicas"
    conditions = [ConditionUpdate(READY, TRUE, reason, why), _progressing(active, reason, why)]
    return Assessment(phase, [accepted(), *conditions], fields, events)


def _move_production_alias(uid, status, fields, events, serving, settings: Settings) -> None:
    """Point MLflow's `production` alias at the serving model's registry version.
    MLflow being down does not stop serving: the alias moves on a later resync
    (status.productionAlias says where it points now), tried again after a
    growing delay, with one Warning for the outage rather than one per try."""
    wanted = f"{serving['modelName']}/{serving['registryVersion']}"
    key = f"{uid}/production-alias"
    if status.get("productionAlias") == wanted or not ALIAS_BACKOFF.due(key):
        return
    try:
        moved = tracking.move_alias(
            settings.mlflow_tracking_uri,
            serving["modelName"],
            PRODUCTION,
            serving["registryVersion"],
        )
    except Exception as err:  # MLflow unreachable or refusing: say so, retry later
        failures, delay = ALIAS_BACKOFF.failed(key)
        if failures == 1:
            why = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            message = f"MLflow alias production -> {wanted}: {why}; retrying with backoff"
            events.append(("Warning", "AliasNotMoved", message))
        return
    ALIAS_BACKOFF.succeeded(key)
    fields["productionAlias"] = wanted
    if moved:  # status says where it points either way
        events.append(("Normal", "AliasMoved", f"MLflow alias production -> {wanted}"))


def _commit_hint(promoted: str) -> str:
    return f"promoted {promoted}: set spec.stable.modelVersion to {promoted} and remove spec.canary"


def _apply_track(body, spec, track, model: ServedModel, replicas, settings) -> dict[str, Any]:
    autoscaled = spec.autoscaling is not None and (track == "stable" or _exact(spec))
    deployment = build_deployment(
        body, spec, track, model, None if autoscaled else replicas, settings
    )
    applied = children.apply(deployment)
    children.apply(build_service(body, track))
    if autoscaled:
        children.apply(build_autoscaler(body, spec, track))
    return applied


def _canary_exists(body) -> bool:
    meta = body["metadata"]
    name = track_name(meta["name"], "canary")
    return children.get("apps/v1", "Deployment", meta["namespace"], name) is not None


def _exact(spec: InferenceServiceSpec) -> bool:
    # With the Service router the canary's share is its replica count, which an
    # autoscaler would change; only exact (Gateway API) weights leave it free.
    return bool(spec.traffic and spec.traffic.router == "gateway-api")


def _remove_canary(body, spec) -> None:
    meta = body["metadata"]
    name = track_name(meta["name"], "canary")
    for api_version, kind in (
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
    ):
        children.delete(api_version, kind, meta["namespace"], name)
    rollout.forget(meta["uid"])


def _rollout_state(deployment: Mapping[str, Any]) -> tuple[int, bool]:
    """(ready replicas, whether the Deployment's current template is fully rolled out)."""
    status = deployment.get("status") or {}
    desired = _desired(deployment)
    ready = status.get("readyReplicas") or 0
    current = (status.get("observedGeneration") or 0) >= deployment["metadata"].get("generation", 0)
    done = (
        current
        and (status.get("updatedReplicas") or 0) >= desired
        and (status.get("replicas") or 0) <= desired
        and (status.get("availableReplicas") or 0) >= desired
    )
    return ready, done


def _desired(deployment: Mapping[str, Any]) -> int:
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else replicas


def _pod_urls(pods: list[dict[str, Any]]) -> dict[str, str]:
    """The metrics URLs of the ready pods among `pods`, by pod name."""
    urls = {}
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )
        if ip and ready and not pod["metadata"].get("deletionTimestamp"):
            urls[pod["metadata"]["name"]] = f"http://{ip}:{PORT}/metrics"
    return urls


def _served(resource: str, version: Mapping[str, Any]) -> ServedModel:
    return ServedModel(resource, version["modelName"], str(version["registryVersion"]))


def _progressing(active: bool, reason: str, message: str) -> ConditionUpdate:
    return ConditionUpdate("Progressing", TRUE if active else FALSE, reason, message)


def _not_ready(reason: str, message: str) -> ConditionUpdate:
    return ConditionUpdate(READY, FALSE, reason, message)


def reconcile_inference_service(
    body: kopf.Body,
    patch: kopf.Patch,
    model_versions: kopf.Index,
    dataset_snapshots: kopf.Index,
    training_runs: kopf.Index,
    **_: Any,
) -> None:
    reconcile(
        INFERENCE_SERVICE,
        body,
        patch,
        lambda spec, b: assess(spec, b, model_versions, dataset_snapshots, training_runs),
    )


register(INFERENCE_SERVICE, reconcile_inference_service)
