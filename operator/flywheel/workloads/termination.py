"""The result channel: a small JSON document in the container's termination message.

The kubelet keeps at most 4096 bytes of it, and a cut-off JSON document is
worse than a short one, so `render_termination` shrinks the message until it
fits: long strings first, then failures and long lists (the trainer's features)
from the end, then everything but the verdict and the few keys the operator
cannot do without.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_PATH = "/dev/termination-log"
LIMIT_BYTES = 4000  # below the kubelet's 4096, with room to spare
CLIP_LENGTHS = (1000, 300, 120, 60)
# Clipping would make them wrong.
UNCLIPPED = frozenset({"version", "profileUri", "runId", "modelUri", "modelId", "datasetVersion"})
# Lists that may lose items from the end; "<key>Omitted" says how many.
SHORTENED = ("features",)
# What the last resort keeps besides the verdict: ids and numbers, all short.
ESSENTIAL = ("version", "runId", "modelUri", "modelId", "datasetVersion", "metrics")
REDACTED = "***"
# Environment variables whose values must never leave the pod.
SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "HTTP_AUTHORIZATION",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
)


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Values to redact: each secret variable whole and word by word, so
    'Bearer <token>' is caught when only the token is echoed."""
    found: set[str] = set()
    for name in SECRET_VARIABLES:
        value = environ.get(name, "")
        found.update(part for part in [value, *value.split()] if len(part) >= 6)
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def render_termination(message: Mapping[str, Any], secrets: Iterable[str] = ()) -> str:
    """Compact JSON under LIMIT_BYTES, with secrets redacted."""
    hidden = list(secrets)
    redacted = _map_strings(dict(message), lambda text, _key: redact(text, hidden))
    for candidate in _shrinking(redacted):
        text = json.dumps(candidate, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) < LIMIT_BYTES:
            return text
    raise AssertionError("unreachable: the last candidate is a few dozen bytes")


def _shrinking(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield message
    for length in CLIP_LENGTHS:
        yield _clip(message, length)
    failures = message.get("validation", {}).get("failures", [])
    for keep in range(len(failures) - 1, -1, -1):
        shorter = _clip(message, CLIP_LENGTHS[-1])
        shorter["validation"]["failures"] = shorter["validation"]["failures"][:keep]
        shorter["validation"]["omitted"] = len(failures) - keep
        yield shorter
    for key in SHORTENED:
        items = message.get(key)
        if not isinstance(items, list):
            continue
        keep = len(items)
        while keep > 0:
            keep = min(keep - 1, keep * 7 // 8)
            shorter = _clip(message, CLIP_LENGTHS[-1])
            shorter[key] = shorter[key][:keep]
            shorter[key + "Omitted"] = len(items) - keep
            yield shorter
    last: dict[str, Any] = {key: message[key] for key in ("ok", *ESSENTIAL) if key in message}
    if "error" in message:
        last["error"] = {"reason": message["error"]["reason"]}
    yield last | {"truncated": True}


def _clip(message: dict[str, Any], length: int) -> dict[str, Any]:
    def clip(text: str, key: str) -> str:
        if len(text) <= length or key in UNCLIPPED:
            return text
        return text[: length - 1] + "…"

    return _map_strings(message, clip)


def _map_strings(value: Any, change: Callable[[str, str], str], key: str = "") -> Any:
    """A copy of a JSON-like value with `change(text, key)` applied to every string."""
    if isinstance(value, dict):
        return {k: _map_strings(v, change, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, change, key) for v in value]
    if isinstance(value, str):
        return change(value, key)
    return value


def write_termination(text: str, path: str | Path = DEFAULT_PATH) -> None:
    Path(path).write_text(text, encoding="utf-8")


def report_and_exit(text: str, path: str | Path, log: logging.Logger, code: int) -> NoReturn:
    """Write the result where the kubelet reads it, echo it, and exit with `code`."""
    try:
        write_termination(text, path)
    except OSError as exc:  # still report on stdout, which `kubectl logs` shows
        log.error("cannot write the termination message to %s: %s", path, exc)
    print(text, flush=True)
    sys.exit(code)
