"""The closed loop on the real node, told by `flywheel demo`'s narrator and timed.

`Loop` is flywheel.demo.Demo with three differences: every step it waits for is
a stage of the timeline; its time limits are scaled for real containers on a
small shared machine; and its traffic goes through the InferenceService's
Service (its ClusterIP, which kube-proxy routes from the host) instead of
straight to the pods, as a client in the cluster would send it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flywheel.demo import Demo, Traffic

# Demo's words for what it waits for -> the stage names of the issue, in order.
STAGES = [
    ("Dataset iris to be Ready", "snapshot (Dataset iris Ready)"),
    ("TrainingRun iris-rf to start", "training started (MLflow run)"),
    ("TrainingRun iris-rf to finish", "training (iris-rf Succeeded)"),
    ("ModelVersion iris-v1", "registration (iris-v1 Servable)"),
    ("InferenceService iris to be Ready", "serving (model servers Ready)"),
    ("requests to be answered", "traffic over the Service"),
    ("a drift check to flag", "drift detected (shifted traffic)"),
    ("the operator to start a retraining", "retraining started"),
    ("TrainingRun ", "retraining (TrainingRun Succeeded)"),
    ("ModelVersion ", "retrained model registered"),
    (" to start as the canary", "canary started"),
    ("the canary ", "canary promoted"),
]


def stage_name(what: str) -> str:
    for words, name in STAGES:
        if words in what:
            return name
    return what


@dataclass
class Timeline:
    """Seconds per stage, in the order they ran; a stage that raised is marked."""

    stages: list[tuple[str, float, str]] = field(default_factory=list)
    begun: float = field(default_factory=time.monotonic)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        outcome = "FAILED"
        try:
            yield
            outcome = ""
        finally:
            self.stages.append((name, time.monotonic() - started, outcome))

    def render(self) -> str:
        width = max([len(name) for name, _, _ in self.stages] + [20])
        lines = ["e2e timeline (seconds per stage)"]
        for name, seconds, outcome in self.stages:
            lines.append(f"  {name:<{width}}  {seconds:7.1f}  {outcome}".rstrip())
        total = time.monotonic() - self.begun
        lines.append(f"  {'total':<{width}}  {total:7.1f}")
        return "\n".join(lines)


class ServiceTraffic(Traffic):
    """Demo's traffic, sent to the Service's ClusterIP: kube-proxy picks the
    pod, so the canary's share of traffic is the Services' split, as in production."""

    def endpoints(self) -> list[str]:
        from kubernetes import client

        core = client.CoreV1Api(self.discovery.api_client)
        service = core.read_namespaced_service(self.service, self.namespace)
        port = next(p.port for p in service.spec.ports if p.name == "http")
        return [f"{service.spec.cluster_ip}:{port}"]


class Loop(Demo):
    def __init__(
        self,
        namespace: str,
        operator_log: str,
        kubectl: str,
        timeline: Timeline,
        kubeconfig: str,
        scale: float = 2.0,
    ):
        # Demo loads the default kubeconfig, whose path the kubernetes package
        # took from $KUBECONFIG once, at import: before the node existed.
        from kubernetes.config import kube_config

        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = kubeconfig
        super().__init__(namespace, operator_log, kubectl)
        self.timeline, self.scale = timeline, scale
        self.clients: list[ServiceTraffic] = []

    def traffic(self, kube, namespace: str, service: str, frame) -> ServiceTraffic:  # type: ignore[override]
        sender = ServiceTraffic(kube, namespace, service, frame)
        self.clients.append(sender)
        return sender

    def wait(
        self,
        what: str,
        probe: Callable[[], Any],
        timeout: float,
        look: str,
        tick: Callable[[], None] | None = None,
    ) -> Any:
        with self.timeline.stage(stage_name(what)):
            return super().wait(what, probe, timeout * self.scale, look, tick)
