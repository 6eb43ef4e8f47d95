"""Importing a package's submodules without its __init__ until a name only
__init__ defines is asked for, or each re-exported name on demand;
Evidently's and the kubernetes client's own cases in fresh processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from flywheel.lazy_package import imports_without_init, names_on_demand


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


@pytest.fixture
def reexporting(tmp_path, monkeypatch):
    """A package whose __init__ only re-exports, as the kubernetes client's
    does; which of its modules ran shows in sys.modules."""
    root = tmp_path / "reexports"
    (root / "models").mkdir(parents=True)
    (root / "__init__.py").write_text(
        '"""A docstring."""\nfrom __future__ import annotations\n'
        '__version__ = "2.1"\n'
        "from reexports.models.small import Small\n"
        "from reexports.models.big import Big as Renamed\n"
        "from .helpers import helper\n"
        "from . import extra\n"
    )
    (root / "models" / "__init__.py").write_text(
        "from reexports.models.small import Small\nfrom reexports.models.big import Big\n"
    )
    (root / "models" / "small.py").write_text("class Small: pass\n")
    (root / "models" / "big.py").write_text("class Big: pass\n")
    (root / "helpers.py").write_text("def helper(): return 'help'\n")
    (root / "extra.py").write_text("NAME = 'extra'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "reexports"
    for name in [m for m in sys.modules if m == "reexports" or m.startswith("reexports.")]:
        del sys.modules[name]


def test_each_reexported_name_imports_only_its_own_module(reexporting):
    names_on_demand(reexporting)
    names_on_demand(f"{reexporting}.models")
    import reexports  # type: ignore[import-not-found]

    assert reexports.__version__ == "2.1"
    assert not [m for m in sys.modules if m.startswith("reexports.models.")]
    from reexports import Small  # type: ignore[import-not-found]

    assert Small.__module__ == "reexports.models.small"
    assert reexports.models.Small is Small  # models/__init__ did not import big either
    assert "reexports.models.big" not in sys.modules
    assert reexports.Renamed is sys.modules["reexports.models.big"].Big
    assert reexports.helper() == "help" and reexports.extra.NAME == "extra"
    # A submodule the real __init__ imported from is a name too, as it would be.
    assert reexports.models.Small is Small and reexports.models.Big is reexports.Renamed
    assert {"Small", "Renamed", "helper", "extra", "models"} <= set(dir(reexports))
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        reexports.missing  # noqa: B018


def test_an_init_that_does_more_than_reexport_is_refused(reexporting, tmp_path):
    init = tmp_path / "reexports" / "__init__.py"
    for body, says in [
        ("import os\nfrom .helpers import helper\n", "does more than re-export"),
        ("from .helpers import helper\nVALUE = helper()\n", "computes a value"),
        ("from .helpers import *\n", "imports \\*"),
    ]:
        init.write_text(body)
        with pytest.raises(ValueError, match=says):
            names_on_demand(reexporting)
        assert reexporting not in sys.modules


def test_the_operator_imports_the_kubernetes_client_class_by_class():
    """In a process of its own, as `flywheel run` starts: kopf and the
    controllers load without the client's ~770 model classes; what the
    operator and kopf use works, the deserialiser included."""
    script = textwrap.dedent(
        """
        import sys
        from flywheel.integrations.kube_imports import import_kubernetes_client_on_demand
        assert import_kubernetes_client_on_demand()
        import kopf, flywheel.controllers, flywheel.runner
        models = [m for m in sys.modules if m.startswith("kubernetes.client.models.")]
        assert len(models) < 10, models
        from kubernetes import client
        import kubernetes
        api = client.ApiClient()
        body = {"items": [{"metadata": {"name": "p", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Job", "name": "j", "uid": "u"}]}}]}
        pods = api._ApiClient__deserialize(body, "V1PodList")
        assert pods.items[0].metadata.owner_references[0].name == "j"
        assert api.sanitize_for_serialization(pods) == body
        assert client.CoreV1Api(api).api_client is api
        assert kubernetes.__version__ == client.__version__
        assert isinstance(client.rest.ApiException(status=404), client.ApiException)
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
