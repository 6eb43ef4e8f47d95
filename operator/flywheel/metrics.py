"""The operator's own Prometheus metrics."""

from __future__ import annotations

import threading
from collections import Counter as Tally

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

RECONCILES = Counter(
    "flywheel_reconcile_total",
    "Reconciles by kind and result (ok, invalid, error; unavailable: a dependency "
    "was down; backoff: skipped while waiting to try it again).",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "flywheel_reconcile_duration_seconds",
    "Time spent in one reconcile, by kind.",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class PhaseBook(Collector):
    """The phase of every object the operator has seen, exported as
    `flywheel_objects{kind, phase}` at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str, str], str] = {}

    def record(self, kind: str, namespace: str, name: str, phase: str | None) -> None:
        with self._lock:
            self._phases[(kind, namespace, name)] = phase or "Unknown"

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._phases.pop((kind, namespace, name), None)

    def collect(self):
        with self._lock:
            counts = Tally((kind, phase) for (kind, _, _), phase in self._phases.items())
        family = GaugeMetricFamily(
            "flywheel_objects",
            "Objects the operator watches, by kind and phase.",
            labels=["kind", "phase"],
        )
        for (kind, phase), count in sorted(counts.items()):
            family.add_metric([kind, phase], count)
        yield family


PHASES = PhaseBook()
REGISTRY.register(PHASES)
