"""Where kopf keeps its bookkeeping on our objects: in status, under `flywheel`.

kopf tells a create from an edit, and an edit from a no-op, by comparing an
object with the copy of its spec it stored when its handlers last ran; and it
records a handler's retries. In annotations (kopf's defaults) each create and
each edit cost a metadata PATCH of their own beside the status PATCH the same
reconcile writes. In status, kopf sends it all in one PATCH of the status
subresource: `status.flywheel.last-handled-configuration` and, while a handler
retries, `status.flywheel.progress`. The key is ours, not kopf's default
`kopf`, as our annotations' prefix was: another kopf operator watching these
objects keeps its own records apart.

Objects written by an older operator keep the copy in an annotation: it is
read from there until their next change, which stores it in status and drops
the annotation. (Their `kopf-managed` marker and any progress annotations
stay; kopf leaves annotations under a marked prefix out of its comparison.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf

from ..api.common import GROUP

KEY = "flywheel"  # status.flywheel.last-handled-configuration
LEGACY_KEY = "last-handled-configuration"


class StatusDiffBase(kopf.MultiDiffBaseStorage):
    def __init__(self) -> None:
        self.in_status = kopf.StatusDiffBaseStorage(name=KEY)
        self.legacy = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key=LEGACY_KEY)
        # Both build the copy without their own field; fetch tries status first.
        super().__init__([self.in_status, self.legacy])

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> Any:
        # kopf deep-copies the whole body, then drops its metadata and status:
        # on every watch event of ours, managedFields and status included (a
        # fifth of the operator's CPU in a burst of 1,000 InferenceServices).
        # Only what the copy keeps is handed on, so the copy is the same.
        if extra_fields:  # a handler that watches a status field: kopf's way
            return super().build(body=body, extra_fields=extra_fields)
        return super().build(body=kopf.Body(essential_part(body)))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        self.in_status.store(body=body, patch=patch, essence=essence)
        annotations = body.metadata.annotations
        for key in self.legacy.make_keys(LEGACY_KEY, body=body):
            if key in annotations:
                patch.metadata.annotations[key] = None


def progress_storage() -> kopf.StatusProgressStorage:
    return kopf.StatusProgressStorage(name=KEY)  # status.flywheel.progress


def essential_part(body: kopf.Body) -> dict[str, Any]:
    """The body without what kopf's copy drops anyway: status, and metadata
    other than labels and annotations (which it compares)."""
    part = {key: value for key, value in body.items() if key != "status"}
    metadata = body.get("metadata") or {}
    part["metadata"] = {k: metadata[k] for k in ("labels", "annotations") if k in metadata}
    return part
