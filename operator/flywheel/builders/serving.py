"""What an InferenceService becomes: per track a Deployment of `flywheel serve`,
a Service and optionally a HorizontalPodAutoscaler; one umbrella Service over
both tracks; and, with the gateway-api router, an HTTPRoute with exact weights.

Every builder is pure: the controller applies the result server-side, so a
child that already matches is not written again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api.common import GROUP, parse_duration
from ..api.inferenceservice import InferenceLogging, InferenceServiceSpec
from ..settings import Settings
from .common import (
    RESTRICTED_CONTAINER_SECURITY,
    RESTRICTED_POD_SECURITY,
    child_name,
    env_value,
    labels,
    metadata,
    placement,
    secret_env,
)

COMPONENT = "model-server"
TRACK_LABEL = f"{GROUP}/track"
SERVICE_LABEL = f"{GROUP}/inferenceservice"
PORT = 8080
SERVICE_PORT = 80
DEFAULT_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
# Model loading takes seconds (MLflow download, unpickling); the startup
# probe gives it up to 5 minutes before liveness starts counting.
STARTUP_FAILURES, PROBE_PERIOD = 60, 5


@dataclass(frozen=True)
class ServedModel:
    """A ModelVersion as a track serves it."""

    resource: str  # the ModelVersion's name
    model_name: str  # the registered model in MLflow
    registry_version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.model_name}/{self.registry_version}"


def track_name(service: str, track: str) -> str:
    return child_name(service, track)


def selector(service: str, track: str | None = None) -> dict[str, str]:
    chosen = {SERVICE_LABEL: service}
    if track:
        chosen[TRACK_LABEL] = track
    return chosen


def _child_meta(isvc: Mapping[str, Any], name: str, track: str | None) -> dict[str, Any]:
    meta = metadata(isvc, name, COMPONENT)
    if track:
        meta["labels"][TRACK_LABEL] = track
    return meta


def inference_logs_of(
    settings: Settings, spec: InferenceServiceSpec, namespace: str, service: str
) -> str:
    """The prefix every track's model server logs under (one folder per
    ModelVersion); the drift check reads the whole prefix."""
    destination = spec.logging.destination if spec.logging else None
    root = destination or f"{settings.artifact_root}/inference-logs"
    return f"{root.rstrip('/')}/{namespace}/{service}"


def inference_log_uri(
    spec: InferenceServiceSpec, settings: Settings, namespace: str, service: str, model: str
) -> str | None:
    """Where one ModelVersion's server logs; None when logging is off."""
    logging = spec.logging
    if logging is not None and (not logging.enabled or logging.sample_rate == 0):
        return None
    return f"{inference_logs_of(settings, spec, namespace, service)}/{model}"


def build_deployment(
    isvc: Mapping[str, Any],
    spec: InferenceServiceSpec,
    track: str,
    model: ServedModel,
    replicas: int | None,
    settings: Settings,
) -> dict[str, Any]:
    """The track's Deployment. `replicas` None leaves the count to an HPA."""
    service, namespace = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
    name = track_name(service, track)
    env = [
        env_value("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri),
        env_value("FLYWHEEL_MODEL_URI", model.uri),
        env_value("FLYWHEEL_MODEL_NAME", model.model_name),
        env_value("FLYWHEEL_MODEL_VERSION", model.resource),
        env_value("FLYWHEEL_TRACK", track),
        env_value("FLYWHEEL_PORT", str(PORT)),
    ]
    log_uri = inference_log_uri(spec, settings, namespace, service, model.resource)
    if log_uri:
        logging = spec.logging or InferenceLogging()
        flush = parse_duration(logging.flush_interval).total_seconds()
        env += [
            env_value("FLYWHEEL_INFERENCE_LOG_URI", log_uri),
            env_value("FLYWHEEL_INFERENCE_LOG_SAMPLE_RATE", f"{logging.sample_rate:g}"),
            env_value("FLYWHEEL_INFERENCE_LOG_FLUSH_SECONDS", f"{max(flush, 1):g}"),
        ]
        if settings.s3_endpoint:
            env.append(env_value("FLYWHEEL_S3_ENDPOINT", settings.s3_endpoint))
        if log_uri.startswith("s3://") and settings.artifact_secret:
            env += secret_env(
                settings.artifact_secret, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
            )
    container = {
        "name": "server",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["flywheel", "serve"],
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": spec.resources.to_wire() if spec.resources else DEFAULT_RESOURCES,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "startupProbe": _probe("/v2/health/live", failures=STARTUP_FAILURES),
        "livenessProbe": _probe("/v2/health/live", failures=3),
        "readinessProbe": _probe("/v2/health/ready", failures=2, period=2),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # Writable scratch: the metrics of several workers, the MLflow download.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_labels = {**labels(isvc, COMPONENT), TRACK_LABEL: track}
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(service, track)},
        # A new model replaces the old one pod by pod, never below the
        # current capacity (maxUnavailable 0): no downtime on a change.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": RESTRICTED_POD_SECURITY,
                "terminationGracePeriodSeconds": 30,
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                **placement(spec.scheduling),
            },
        },
    }
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _child_meta(isvc, name, track),
        "spec": deployment_spec,
    }


def build_service(isvc: Mapping[str, Any], track: str | None) -> dict[str, Any]:
    """A track's Service, or (track None) the umbrella Service over both."""
    service = isvc["metadata"]["name"]
    name = track_name(service, track) if track else service
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _child_meta(isvc, name, track),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(service, track),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def build_autoscaler(
    isvc: Mapping[str, Any], spec: InferenceServiceSpec, track: str
) -> dict[str, Any]:
    scaling = spec.autoscaling
    assert scaling is not None
    name = track_name(isvc["metadata"]["name"], track)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _child_meta(isvc, name, track),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }


def build_http_route(
    isvc: Mapping[str, Any], spec: InferenceServiceSpec, stable_weight: int, canary_weight: int
) -> dict[str, Any]:
    """Exact percentages through a Gateway (Gateway API v1 HTTPRoute)."""
    service = isvc["metadata"]["name"]
    gateway = spec.traffic.gateway_ref if spec.traffic else None
    assert gateway is not None
    parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway.name}
    if gateway.namespace:
        parent["namespace"] = gateway.namespace
    backends = [_backend(track_name(service, "stable"), stable_weight)]
    if canary_weight:
        backends.append(_backend(track_name(service, "canary"), canary_weight))
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _child_meta(isvc, service, None),
        "spec": {"parentRefs": [parent], "rules": [{"backendRefs": backends}]},
    }


def _backend(name: str, weight: int) -> dict[str, Any]:
    return {"kind": "Service", "name": name, "port": SERVICE_PORT, "weight": weight}


def _probe(path: str, failures: int, period: int = PROBE_PERIOD) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }
