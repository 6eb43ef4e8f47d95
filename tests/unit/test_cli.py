"""The `flywheel` command line: each workload command loads only when used."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from click.testing import CliRunner

from flywheel.cli import WORKLOAD_COMMANDS, main


def test_every_command_is_listed_and_named_as_it_is_called():
    listed = CliRunner().invoke(main, ["--help"])
    assert listed.exit_code == 0, listed.output
    for name in [*WORKLOAD_COMMANDS, "run", "crds"]:
        assert f"  {name} " in listed.output
        assert main.get_command(None, name).name == name  # type: ignore[arg-type, union-attr]
    assert main.get_command(None, "no-such-command") is None  # type: ignore[arg-type]


def test_a_command_loads_its_own_module_and_not_the_others():
    """In a fresh process, as a pod starts: `flywheel dataset-snapshot --help`
    imports the snapshot's module, not the model server's, the trainer's,
    the drift check's or the demo's."""
    script = textwrap.dedent(
        """
        import sys
        from flywheel.cli import WORKLOAD_COMMANDS, main
        modules = {n: p.partition(":")[0] for n, p in WORKLOAD_COMMANDS.items()}
        assert not [m for m in modules.values() if m in sys.modules]
        try:
            main(["dataset-snapshot", "--help"])
        except SystemExit as done:
            assert done.code == 0
        loaded = sorted(n for n, m in modules.items() if m in sys.modules)
        print(loaded)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['dataset-snapshot']"
