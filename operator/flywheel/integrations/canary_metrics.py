"""Measuring a canary: scrape its pods' /metrics, or ask Prometheus.

Both give `policy.canary.Figures` for the last interval. Scraping keeps
cumulative counters per pod; the figures are the difference between two
scrapes, with a pod whose counters went down (a restarted container) counted
from zero, as Prometheus' rate() does.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ..api.inferenceservice import MetricQuery
from ..policy.canary import Figures

REQUESTS = "flywheel_serve_requests_total"
DURATION = "flywheel_serve_request_duration_seconds"
CANARY = "canary"
SCRAPE_TIMEOUT = 2.0
QUERY_TIMEOUT = 5.0


@dataclass
class PodCounts:
    """One pod's cumulative counters for one track."""

    requests: float = 0.0
    errors: float = 0.0  # 5xx
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count

    def went_down(self, before: PodCounts) -> bool:
        if self.requests < before.requests or self.errors < before.errors:
            return True
        return any(self.buckets.get(le, 0.0) < n for le, n in before.buckets.items())


@dataclass
class Snapshot:
    """Counters per pod (keyed by pod name or URL) and the pods that could not be read."""

    pods: dict[str, PodCounts] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # pod -> why

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, to keep a baseline across operator restarts."""
        return {
            "pods": {
                key: {
                    "requests": c.requests,
                    "errors": c.errors,
                    "buckets": {_le_text(le): n for le, n in c.buckets.items()},
                }
                for key, c in self.pods.items()
            },
            "failures": dict(self.failures),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        pods = {
            key: PodCounts(
                float(c["requests"]),
                float(c["errors"]),
                {float(le): float(n) for le, n in c.get("buckets", {}).items()},
            )
            for key, c in (data.get("pods") or {}).items()
        }
        return cls(pods, dict(data.get("failures") or {}))


def scrape(
    targets: Mapping[str, str] | Iterable[str],
    timeout: float = SCRAPE_TIMEOUT,
    track: str = CANARY,
    model_version: str | None = None,
) -> Snapshot:
    """GET every target's /metrics URL and keep the `track` series.

    `targets` maps pod name -> URL (or is a list of URLs, keyed by URL).
    A pod that cannot be read is listed in `failures`, never raised."""
    pairs = targets.items() if isinstance(targets, Mapping) else ((u, u) for u in targets)
    snapshot = Snapshot()
    for key, url in pairs:
        try:
            text = _get(url, timeout).decode("utf-8", errors="replace")
            snapshot.pods[key] = parse_counts(text, track, model_version)
        except (OSError, ValueError) as err:  # URLError, timeouts, refused, bad text
            snapshot.failures[key] = _why(err)
    return snapshot


def parse_counts(text: str, track: str = CANARY, model_version: str | None = None) -> PodCounts:
    """Sum a pod's request, 5xx and latency-bucket counters of one track."""
    counts = PodCounts()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("track") != track:
                continue
            if model_version is not None and labels.get("model_version") != model_version:
                continue
            if sample.name == REQUESTS:
                counts.requests += sample.value
                if str(labels.get("code", "")).startswith("5"):
                    counts.errors += sample.value
            elif sample.name == f"{DURATION}_bucket":
                le = float(labels["le"])
                counts.buckets[le] = counts.buckets.get(le, 0.0) + sample.value
    return counts


def figures_between(before: Snapshot | None, after: Snapshot) -> Figures | None:
    """The canary's figures between two scrapes; None when no pod could be read.

    A pod missing from `before` (new, or unreadable then) and a pod whose
    counters went down (restarted) count from zero. Pods missing from `after`
    are left out."""
    if not after.pods:
        return None
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for key, now in after.pods.items():
        then = (before.pods.get(key) if before else None) or PodCounts()
        if now.went_down(then):
            then = PodCounts()
        requests += now.requests - then.requests
        errors += now.errors - then.errors
        for le, n in now.buckets.items():
            buckets[le] = buckets.get(le, 0.0) + n - then.buckets.get(le, 0.0)
    p99 = histogram_quantile(0.99, buckets)
    return Figures(
        requests=requests,
        errors=errors,
        p99_latency_ms=None if p99 is None else p99 * 1000,
    )


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of cumulative buckets (le -> count), as PromQL computes it:
    linear interpolation inside the bucket holding the rank; a rank in the +Inf
    bucket gives the largest finite bound. None without observations."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    counts, highest = [], 0.0
    for le in bounds:  # cumulative counts must not go down (Prometheus fixes this too)
        highest = max(highest, buckets[le])
        counts.append(highest)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if i == len(bounds) - 1:
        return bounds[-2] if len(bounds) > 1 else None
    start, end = (0.0, bounds[0]) if i == 0 else (bounds[i - 1], bounds[i])
    if i == 0 and end <= 0:
        return end
    below = counts[i - 1] if i > 0 else 0.0
    in_bucket = counts[i] - below
    return start + (end - start) * ((rank - below) / in_bucket if in_bucket else 1.0)


class PrometheusError(Exception):
    """Prometheus could not answer a query, or its answer is not one number."""


class NoData(PrometheusError):
    """The query returned no samples."""


def query_prometheus(url: str, promql: str, timeout: float = QUERY_TIMEOUT) -> float:
    """Run an instant query (GET /api/v1/query); a scalar or one-sample vector -> float."""
    address = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        body = json.loads(_get(address, timeout))
    except urllib.error.HTTPError as err:
        raise PrometheusError(f"query {promql!r}: {_api_error(err)}") from err
    except (OSError, ValueError) as err:
        raise PrometheusError(f"query {promql!r}: Prometheus at {url}: {_why(err)}") from err
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise PrometheusError(f"query {promql!r}: {error or 'unexpected answer'}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(result, promql)
    if kind == "vector":
        if not result:
            raise NoData(f"query {promql!r} returned no samples")
        if len(result) > 1:
            raise PrometheusError(
                f"query {promql!r} returned {len(result)} series; it must return one number"
            )
        return _number(result[0].get("value"), promql)
    raise PrometheusError(f"query {promql!r} returned a {kind}; it must return one number")


def canary_selector(namespace: str, model_version: str, track: str = CANARY) -> str:
    """Label matchers for the canary's series: namespace (attached by Prometheus'
    pod discovery) plus track and model_version (set by the model server)."""
    version = _escape(model_version)
    return f'namespace="{_escape(namespace)}",track="{track}",model_version="{version}"'


def standard_queries(namespace: str, model_version: str, interval: str) -> dict[str, str]:
    """PromQL for the canary's requests, 5xx answers and p99 latency (s) over `interval`."""
    sel = canary_selector(namespace, model_version)
    return {
        "requests": f"sum(increase({REQUESTS}{{{sel}}}[{interval}]))",
        "errors": f'sum(increase({REQUESTS}{{{sel},code=~"5.."}}[{interval}]))',
        "p99": (
            f"histogram_quantile(0.99, sum by (le) (rate({DURATION}_bucket{{{sel}}}[{interval}])))"
        ),
    }


def prometheus_figures(
    url: str,
    namespace: str,
    model_version: str,
    interval: str,
    queries: Sequence[MetricQuery] | None = None,
    timeout: float = QUERY_TIMEOUT,
) -> Figures | None:
    """The canary's figures over the last `interval` from Prometheus.

    None when the request count has no samples (no canary series yet). No 5xx
    series means no errors. Extra queries that fail are reported in
    `Figures.query_errors` (the analysis counts them as failed checks).
    Raises PrometheusError when Prometheus itself cannot be asked."""
    promql = standard_queries(namespace, model_version, interval)
    try:
        requests = query_prometheus(url, promql["requests"], timeout)
    except NoData:
        return None
    if math.isnan(requests):
        return None
    try:
        errors = query_prometheus(url, promql["errors"], timeout)
    except NoData:
        errors = 0.0
    try:
        p99 = query_prometheus(url, promql["p99"], timeout)
        p99_ms = None if math.isnan(p99) else p99 * 1000
    except NoData:
        p99_ms = None
    values, failures = {}, {}
    for query in queries or []:
        try:
            values[query.name] = query_prometheus(url, query.query, timeout)
        except PrometheusError as err:
            failures[query.name] = str(err)
    return Figures(requests, 0.0 if math.isnan(errors) else errors, p99_ms, values, failures)


def _get(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "text/plain, application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _api_error(err: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(err.read())
        return f"{body.get('errorType', 'error')}: {body['error']}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {err.code} {err.reason}"


def _number(value: Any, promql: str) -> float:
    try:
        return float(value[1])
    except (TypeError, ValueError, IndexError) as err:
        raise PrometheusError(f"query {promql!r}: unreadable sample {value!r}") from err


def _why(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _le_text(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(le)
