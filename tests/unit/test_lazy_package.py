"""Importing a package's submodules without its __init__ until a name only
__init__ defines is asked for; Evidently's own case in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from flywheel.workloads.lazy_package import imports_without_init


@pytest.fixture
def package(tmp_path, monkeypatch):
    root = tmp_path / "heavypkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text(
        "import sys\nsys.modules[__name__].runs = getattr(sys.modules[__name__], 'runs', 0) + 1\n"
        "from heavypkg.sub.leaf import VALUE\nEXPORTED = VALUE * 2\n"
    )
    (root / "sub" / "__init__.py").write_text("")
    (root / "sub" / "leaf.py").write_text("VALUE = 21\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "heavypkg"
    for name in [m for m in sys.modules if m == "heavypkg" or m.startswith("heavypkg.")]:
        del sys.modules[name]


def test_submodules_import_without_the_package_init(package):
    imports_without_init(package, ["heavypkg.sub.leaf"])
    assert sys.modules["heavypkg.sub.leaf"].VALUE == 21
    assert "runs" not in sys.modules[package].__dict__  # __init__ has not run


def test_a_name_only_init_defines_runs_it_once_in_the_same_module(package):
    imports_without_init(package, ["heavypkg.sub.leaf"])
    deferred = sys.modules[package]
    from heavypkg import EXPORTED  # type: ignore[import-not-found]

    assert EXPORTED == 42
    assert sys.modules[package] is deferred and deferred.runs == 1
    import heavypkg  # type: ignore[import-not-found]

    assert heavypkg.sub.leaf.VALUE == 21 and heavypkg.runs == 1
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        heavypkg.missing  # noqa: B018


def test_an_init_that_fails_raises_and_leaves_no_half_run_package(package, tmp_path):
    init = tmp_path / "heavypkg" / "__init__.py"
    init.write_text("raise RuntimeError('broken __init__')\n")
    imports_without_init(package, ["heavypkg.sub.leaf"])
    with pytest.raises(RuntimeError, match="broken __init__"):
        from heavypkg import EXPORTED  # type: ignore[import-not-found]  # noqa: F401
    assert package not in sys.modules


def test_an_imported_package_is_left_as_it_is(package):
    import heavypkg  # type: ignore[import-not-found]

    imports_without_init(package, ["heavypkg.sub.leaf"])
    assert sys.modules[package] is heavypkg and heavypkg.runs == 1


def test_the_drift_check_loads_evidently_without_its_ui_and_presets():
    """In a process of its own, as the drift-check command runs: the tests'
    modules load, the package's UI, presets and plotly do not; asked for
    later, Evidently's public names are all there."""
    script = textwrap.dedent(
        """
        import sys
        from flywheel.workloads.drift_report import import_evidently, stat_tests
        import_evidently()
        assert "ks" in stat_tests() and "psi" in stat_tests()
        heavy = ("evidently.ui", "evidently.presets", "evidently.llm")
        loaded = [m for m in heavy if m in sys.modules]
        assert not loaded, loaded
        from evidently import Report, DataDefinition
        from evidently.presets import DataDriftPreset
        import evidently
        assert evidently.__version__ and "evidently.presets" in sys.modules
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
