"""Dataset controller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from ..api.conditions import FALSE, ConditionUpdate
from ..api.dataset import DatasetSpec
from ..api.kinds import DATASET
from .handlers import register
from .reconcile import READY, Assessment, accepted, reconcile


def assess(spec: DatasetSpec, body: Mapping[str, Any]) -> Assessment:
    # The snapshot Job that fills version, rows and profile comes with the
    # training half of the loop; until then the Dataset waits for it.
    return Assessment(
        phase="Pending",
        conditions=[
            accepted(),
            ConditionUpdate(READY, FALSE, "SnapshotPending", "waiting for the first snapshot"),
        ],
    )


def reconcile_dataset(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile(DATASET, body, patch, assess)


register(DATASET, reconcile_dataset)
