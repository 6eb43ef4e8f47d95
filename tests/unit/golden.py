"""Golden-file comparison: FLYWHEEL_UPDATE_GOLDEN=1 rewrites the files."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, value) -> None:
    path = GOLDEN / name
    text = yaml.safe_dump(value, sort_keys=True, width=100)
    if os.environ.get("FLYWHEEL_UPDATE_GOLDEN") or not path.exists():
        path.write_text(text)
    assert path.read_text() == text, (
        f"{name} changed; review and rerun with FLYWHEEL_UPDATE_GOLDEN=1"
    )
