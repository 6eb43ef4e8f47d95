"""The `flywheel` command line: the operator, and the tools around it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from . import __version__

# Each workload pod runs one of these: a command's module (and what it
# imports) loads only when that command runs, or for `--help`. Importing all
# of them took ~120 ms of every start; the command line alone takes ~24 ms.
WORKLOAD_COMMANDS = {
    "dataset-snapshot": "flywheel.workloads.snapshot:dataset_snapshot_command",
    "train": "flywheel.workloads.train:train_command",
    "serve": "flywheel.serving.command:serve_command",
    "drift-check": "flywheel.workloads.drift:drift_check_command",
    "demo": "flywheel.demo:demo_command",
}


class CommandsLoadedOnUse(click.Group):
    """A group whose WORKLOAD_COMMANDS are imported when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *WORKLOAD_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in WORKLOAD_COMMANDS and cmd_name not in self.commands:
            module, _, attribute = WORKLOAD_COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=CommandsLoadedOnUse)
@click.version_option(__version__, prog_name="flywheel")
def main() -> None:
    """Flywheel: the ML lifecycle as Kubernetes custom resources."""


@main.command()
@click.option(
    "--namespace",
    "-n",
    "namespaces",
    multiple=True,
    help="Watch only these namespaces (repeatable). Default: all namespaces.",
)
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Liveness endpoint (kopf's); empty to disable.",
)
@click.option(
    "--metrics-port",
    default=9090,
    show_default=True,
    type=int,
    help="Port of the Prometheus /metrics endpoint; 0 to disable.",
)
@click.option(
    "--metrics-address",
    default="0.0.0.0",
    show_default=True,
    help="Address the metrics endpoint listens on.",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "plain", "full"]),
    default="json",
    show_default=True,
    help="Log format; json is one object per line.",
)
@click.option("--verbose", is_flag=True, help="Debug logging.")
def run(
    namespaces: tuple[str, ...],
    liveness: str,
    metrics_port: int,
    metrics_address: str,
    log_format: str,
    verbose: bool,
) -> None:
    """Run the operator against the cluster in KUBECONFIG (or in-cluster config)."""
    from .integrations.kube_imports import import_kubernetes_client_on_demand

    import_kubernetes_client_on_demand()  # before kopf imports the client: ~29 MiB
    from .integrations.mlflow_rest import MlflowError, max_requests
    from .runner import run_operator

    try:
        max_requests()  # a bad setting stops the start, not every later reconcile
    except MlflowError as err:
        raise click.UsageError(str(err)) from None
    run_operator(
        namespaces=list(namespaces),
        liveness=liveness or None,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        log_format=log_format,
        verbose=verbose,
    )


@main.command()
@click.option(
    "--out",
    "out_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    default=[Path("crds"), Path("charts/flywheel/crds")],
    show_default=True,
    help="Directories to write the CRD files to (repeatable).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 if a file differs from what the models generate.",
)
def crds(out_dirs: tuple[Path, ...], check: bool) -> None:
    """Generate the CRDs from the pydantic models in flywheel.api."""
    from .api.crd import write_crds

    stale = write_crds(list(out_dirs), check=check)
    if check and stale:
        click.echo("out of date (run `make crds`): " + ", ".join(map(str, stale)), err=True)
        sys.exit(1)
    for path in stale:
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
