"""Import a package's submodules without running the package's `__init__`
until something asks for a name only `__init__` defines.

Evidently's `__init__` imports the whole package (its UI, LLM metrics,
presets, SDK, plotly and more) to re-export a few names; the drift check
needs two of its legacy modules. Run first, that `__init__` cost 80 MiB of
resident memory and ~2.5 s of the check (`imports_without_init` on the same
modules: 201 MiB resident after the import against 281).

The package is put in `sys.modules` as its module object, made from its
own spec but not executed, so its submodules import as usual. The first
lookup of a name the package does not (yet) have, such as
`from evidently import Report`, runs the real `__init__` in that same module
object (PEP 562's module `__getattr__`), after which it is the package as
if imported normally: same object, same submodules, every name.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Iterable
from types import ModuleType
from typing import Any


def imports_without_init(package: str, modules: Iterable[str]) -> None:
    """Import `modules` (full dotted names under `package`); run the
    package's `__init__` only if it has not run yet and is asked for later."""
    if package not in sys.modules:
        sys.modules[package] = _deferred_package(package)
    for name in modules:
        importlib.import_module(name)


def _deferred_package(package: str) -> ModuleType:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{package} is not an installed package")
    module = importlib.util.module_from_spec(spec)  # __path__, __spec__; nothing run
    lock = threading.Lock()
    state = {"ran": False}

    def __getattr__(name: str) -> Any:
        with lock:
            if not state["ran"]:
                state["ran"] = True
                del module.__getattr__  # the real module has none
                try:
                    spec.loader.exec_module(module)  # type: ignore[union-attr]
                except BaseException:
                    # As a failed import does: no half-run package stays behind.
                    if sys.modules.get(package) is module:
                        del sys.modules[package]
                    raise
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module
