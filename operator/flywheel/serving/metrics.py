"""The model server's Prometheus metrics, summed over all worker processes.

The names and labels are a contract: the operator's canary analysis queries
them, comparing the stable and canary tracks. Each worker writes its values
to memory-mapped files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode, switched on by the server before the workers start) and
GET /metrics on any worker reads all of them, so a scrape sees the whole pod.
Without that directory (a single process, e.g. in tests) the values stay in
memory and /metrics shows this process's.

Label children are bound once: `.labels()` costs a dictionary lookup and a
lock per call, and the request path calls these a few times per request.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Fine enough below 100 ms for a p99 of fast models, up to 10 s for slow ones.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
# Regression outputs of any scale: 1-2.5-5 steps over nine decades, both signs.
_STEPS = [m * 10.0**e for e in range(-3, 6) for m in (1, 2.5, 5)]
VALUE_BUCKETS = tuple([-v for v in reversed(_STEPS)] + [0.0] + _STEPS)
MAX_CLASSES = 200  # labels beyond these count as "other": series must stay bounded

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class ServeMetrics:
    """All metrics of one worker, with the pod's labels bound."""

    def __init__(self, model_version: str, track: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = None if multiprocess() else self.registry
        base = ("model_version", "track")
        labels = {"model_version": model_version, "track": track}
        self.requests = Counter(
            "flywheel_serve_requests",
            "Inference requests by protocol (v2, invocations) and HTTP status code.",
            [*base, "protocol", "code"],
            registry=registry,
        )
        self._duration = Histogram(
            "flywheel_serve_request_duration_seconds",
            "Time to answer an inference request, from the whole body read to the answer.",
            base,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._in_flight = Gauge(
            "flywheel_serve_in_flight",
            "Inference requests being answered now.",
            base,
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._batch = Histogram(
            "flywheel_serve_batch_size",
            "Rows per inference request.",
            base,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            "flywheel_serve_predictions",
            "Predicted rows by class label (classifiers).",
            [*base, "class"],
            registry=registry,
        )
        self._values = Histogram(
            "flywheel_serve_prediction_value",
            "Predicted values (regressors).",
            base,
            buckets=VALUE_BUCKETS,
            registry=registry,
        )
        self.info = Gauge(
            "flywheel_serve_model_info",
            "1 once the model is loaded; model_uri says which one.",
            [*base, "model_uri"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.log_rows = Counter(
            "flywheel_serve_inference_log_rows",
            "Sampled rows of the inference log, written or dropped.",
            [*base, "outcome"],
            registry=registry,
        )
        self.log_cpu = Counter(
            "flywheel_serve_inference_log_writer_cpu_seconds",
            "CPU time the inference log's writer thread spent building, compressing and "
            "sending files: what the log takes from serving, besides a queue append a request.",
            base,
            registry=registry,
        )
        self.labels = labels
        self.duration = self._duration.labels(**labels)
        self.in_flight = self._in_flight.labels(**labels)
        self.batch = self._batch.labels(**labels)
        self._bound_values: Any = None  # bound on first use: classifiers have none
        self.written = self.log_rows.labels(**labels, outcome="written")
        self.dropped = self.log_rows.labels(**labels, outcome="dropped")
        self.writer_cpu = self.log_cpu.labels(**labels)
        self._requests: dict[tuple[str, int], Any] = {}
        self._classes: dict[str, Any] = {}

    def request(self, protocol: str, code: int) -> None:
        child = self._requests.get((protocol, code))
        if child is None:
            child = self.requests.labels(**self.labels, protocol=protocol, code=str(code))
            self._requests[(protocol, code)] = child
        child.inc()

    def loaded(self, model_uri: str) -> None:
        self.info.labels(**self.labels, model_uri=model_uri).set(1)

    def count_classes(self, predictions: np.ndarray) -> None:
        labels, counts = np.unique(predictions.astype(str), return_counts=True)
        for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
            child = self._classes.get(label)
            if child is None:
                name = label if len(self._classes) < MAX_CLASSES else "other"
                child = self.predictions.labels(**self.labels, **{"class": name})
                self._classes[label] = child
            child.inc(count)

    def observe_values(self, predictions: np.ndarray) -> None:
        """Observe every value at once: one increment per bucket hit, not per
        row (Histogram.observe in a loop costs microseconds a row). Relies on
        prometheus_client keeping per-bucket (not cumulative) counts."""
        values = predictions.astype(np.float64, copy=False).reshape(-1)
        values = values[~np.isnan(values)]  # NaN has no bucket
        if not len(values):
            return
        if self._bound_values is None:
            self._bound_values = self._values.labels(**self.labels)
        histogram = self._bound_values
        bounds = histogram._upper_bounds
        hits = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
        for index, count in enumerate(hits.tolist()):
            if count:
                histogram._buckets[index].inc(count)
        histogram._sum.inc(float(values.sum()))

    def exposition(self) -> bytes:
        if multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
