"""Operator settings from the environment, read once at import.

Kept apart so the kopf decorators, which are evaluated at import time, and the
`flywheel run` command line see the same values."""

from __future__ import annotations

import os

# How often every object is reconciled again even when nothing announced a
# change: the level-based safety net that also notices a referenced object
# appearing. A no-op reconcile writes nothing, so a converged cluster stays quiet.
RESYNC_SECONDS = float(os.environ.get("FLYWHEEL_RESYNC_SECONDS", "30"))
