"""What the operator needs to know about its surroundings, from the environment.

The Helm chart sets these on the operator's Deployment; `flywheel run` reads
them once. Builders receive them as a plain value, so they stay pure."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    # The one image that holds every workload (`flywheel <verb>`).
    image: str = "flywheel:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    # Where profiles, reports and inference logs go: s3://bucket/prefix or file:///path.
    artifact_root: str = "s3://flywheel-artifacts"
    # S3-compatible endpoint for artifact_root and for s3:// data without one.
    s3_endpoint: str | None = None
    # Secret, in each workload's namespace, with AWS_ACCESS_KEY_ID and
    # AWS_SECRET_ACCESS_KEY for the artifact store. Referenced, never read.
    artifact_secret: str | None = "flywheel-artifacts"
    mlflow_tracking_uri: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        defaults = cls()
        return cls(
            image=env.get("FLYWHEEL_IMAGE", defaults.image),
            image_pull_policy=env.get("FLYWHEEL_IMAGE_PULL_POLICY", defaults.image_pull_policy),
            artifact_root=env.get("FLYWHEEL_ARTIFACT_ROOT", defaults.artifact_root).rstrip("/"),
            s3_endpoint=env.get("FLYWHEEL_S3_ENDPOINT") or None,
            artifact_secret=env.get("FLYWHEEL_ARTIFACT_SECRET", defaults.artifact_secret) or None,
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
        )
