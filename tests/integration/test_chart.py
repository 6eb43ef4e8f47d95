"""The Helm chart and the kustomize base, against the real apiserver: lint,
render with default and other values, server-side dry-run of every object,
a real `helm install` whose operator pod becomes Ready (on the kwok node),
and the ServiceAccount's rights checked verb by verb, allowed and denied."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from kube_helpers import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "flywheel"
HELM = ROOT / ".cache" / "bin" / "helm"
# The operator pod goes to kwok's node (kwok makes it Ready without running
# it), never to the pod runner, which would really start a second operator.
KWOK_NODE = [
    "--set", "tolerations[0].key=kwok.x-k8s.io/node,tolerations[0].operator=Exists",
    "--set", "nodeSelector.kubernetes\\.io/hostname=kwok-node-0",
]  # fmt: skip


@pytest.fixture(scope="session")
def helm(control_plane):
    subprocess.run(["bash", str(ROOT / "tests/cluster/build_helm.sh")], check=True)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {"KUBECONFIG": str(control_plane.kubeconfig), "HOME": "/tmp", "PATH": "/usr/bin:/bin"}
        return subprocess.run(
            [str(HELM), *args], capture_output=True, text=True, check=check, env=env
        )

    return run


def test_chart_lints_and_renders_with_default_and_other_values(helm, control_plane):
    assert helm("lint", str(CHART), "--strict").returncode == 0
    default = helm("template", "fw", str(CHART), "-n", "flywheel-system").stdout
    other = helm(
        "template", "fw", str(CHART), "-n", "ops",
        "--set", "watchNamespaces={team-a,team-b}",
        "--set", "mlflow.trackingUri=http://mlflow.mlflow:5000",
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "grafanaDashboard.enabled=true",
        "--set", "logLevel=debug",
    ).stdout  # fmt: skip
    kinds = [d["kind"] for d in yaml.safe_load_all(other) if d]
    assert kinds.count("Role") == 2 and "ClusterRole" not in kinds
    assert {"ServiceMonitor", "ConfigMap"} <= set(kinds)
    dashboard = next(d for d in yaml.safe_load_all(other) if d and d["kind"] == "ConfigMap")
    panels = json.loads(dashboard["data"]["flywheel.json"])["panels"]
    assert any("flywheel_serve_requests_total" in p["targets"][0]["expr"] for p in panels)
    deployment = next(d for d in yaml.safe_load_all(other) if d and d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--verbose" in args
    # Everything but the ServiceMonitor (no Prometheus Operator CRDs here) is
    # accepted by the real apiserver's validation, admission included.
    for text in (default, other):
        control_plane.kubectl("create", "namespace", "ops", check=False)
        control_plane.kubectl("create", "namespace", "flywheel-system", check=False)
        for name in ("team-a", "team-b"):
            control_plane.kubectl("create", "namespace", name, check=False)
        docs = [d for d in yaml.safe_load_all(text) if d and d["kind"] != "ServiceMonitor"]
        stream = yaml.safe_dump_all(docs)
        result = control_plane.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", "-", input=stream
        )
        assert result.returncode == 0


def test_kustomize_base_is_the_default_render_and_applies(helm, control_plane, tmp_path):
    fresh = tmp_path / "operator.yaml"
    subprocess.run(
        ["bash", str(ROOT / "tests/cluster/render_manifests.sh"), str(fresh)], check=True
    )
    assert fresh.read_text() == (ROOT / "manifests" / "operator.yaml").read_text(), (
        "manifests/operator.yaml is stale: run `make manifests`"
    )
    rendered = control_plane.kubectl("kustomize", str(ROOT / "manifests")).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered) if d)
    assert {"Namespace", "ClusterRole", "Deployment", "Service"} <= set(kinds)
    result = control_plane.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-f",
        "-",
        input=rendered,
    )
    assert result.returncode == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "metrics.port=8080"], "/metrics/port"),
        (["--set", "artifacts.root=ftp://x"], "/artifacts/root"),
        (["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (["--set", "replicas=2"], "replicas"),
    ],
)
def test_bad_values_fail_with_the_field_named(helm, values, message):
    result = helm("template", "fw", str(CHART), *values, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


# What the operator does, and must be allowed to.
ALLOWED = [
    ("watch", "inferenceservices.mlops.flywheel.dev"),
    ("patch", "trainingruns.mlops.flywheel.dev/status"),
    ("create", "modelversions.mlops.flywheel.dev"),
    ("update", "inferenceservices.mlops.flywheel.dev/finalizers"),
    ("create", "jobs.batch"),
    ("patch", "cronjobs.batch"),
    ("list", "pods"),
    ("patch", "deployments.apps"),
    ("delete", "services"),
    ("create", "horizontalpodautoscalers.autoscaling"),
    ("patch", "httproutes.gateway.networking.k8s.io"),
    ("create", "events"),
]
# What it never does, and must not be able to.
DENIED = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods/exec"),
    ("delete", "datasets.mlops.flywheel.dev"),
    ("delete", "jobs.batch"),
    ("update", "deployments.apps"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts/token"),
]


def test_helm_install_runs_the_operator_with_least_privilege(
    helm, control_plane, crds, gateway_api
):
    namespace = "flywheel-helm"
    release = helm(
        "upgrade", "--install", "flywheel", str(CHART), "-n", namespace, "--create-namespace",
        "--set", "image.repository=flywheel", "--set", "image.tag=dev",
        *KWOK_NODE, "--skip-crds", "--wait", "--timeout", "120s",
    )  # fmt: skip
    assert "Next:" in release.stdout  # NOTES.txt tells the user what to apply

    def ready():
        pods = control_plane.kubectl(
            "get", "pods", "-n", namespace, "-o", "json",
            "-l", "app.kubernetes.io/name=flywheel-operator",
        ).stdout  # fmt: skip
        items = json.loads(pods)["items"]
        return (
            items
            and all(
                any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions", [])
                )
                for p in items
            )
            and items
        )

    pods = wait_for(ready, timeout=120, what="the operator pod to be Ready")
    assert pods[0]["spec"]["nodeName"] == "kwok-node-0"
    account = f"system:serviceaccount:{namespace}:flywheel"

    def can(verb, resource, where="team-x"):
        resource, _, sub = resource.partition("/")
        extra = [f"--subresource={sub}"] if sub else []
        result = control_plane.kubectl(
            "auth", "can-i", verb, resource, *extra, "-n", where, "--as", account, check=False
        )
        return result.stdout.strip() == "yes"

    try:
        for verb, resource in ALLOWED:
            assert can(verb, resource), f"the operator needs to {verb} {resource}"
        for verb, resource in DENIED:
            assert not can(verb, resource), f"the operator must not {verb} {resource}"
    finally:
        helm("uninstall", "flywheel", "-n", namespace)
