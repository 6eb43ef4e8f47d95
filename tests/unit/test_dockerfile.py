"""operator/Dockerfile, read as a reviewer would (no Docker engine here to build it)."""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = (Path(__file__).resolve().parents[2] / "operator" / "Dockerfile").read_text()
STAGES = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]


def test_base_image_is_pinned_to_a_patch_release():
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    assert all(stage.startswith("${PYTHON_IMAGE}") for stage in STAGES)


def test_final_stage_runs_as_the_non_root_user_the_charts_expect():
    final = STAGES[-1]
    assert "USER 65532:65532" in final
    assert "--uid 65532" in final and "--gid 65532" in final


def test_final_stage_has_no_build_tools_and_no_healthcheck():
    final = STAGES[-1]
    assert "pip install" not in final and "apt-get" not in final
    assert "COPY --from=build /opt/flywheel /opt/flywheel" in final
    assert not re.search(r"^HEALTHCHECK", DOCKERFILE, re.M)


def test_every_workload_verb_is_in_the_image():
    # One entry point serves all verbs; the install step checks it runs.
    assert "flywheel --version" in STAGES[0]
    assert 'CMD ["flywheel", "run"]' in STAGES[-1]
