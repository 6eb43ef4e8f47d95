"""Import a package's submodules without running the package's `__init__`
until something asks for a name only `__init__` defines; or import each name
an `__init__` re-exports only when it is first asked for.

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

import ast
import importlib
import importlib.util
import sys
import threading
from collections.abc import Iterable
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any


def imports_without_init(package: str, modules: Iterable[str]) -> None:
    """Import `modules` (full dotted names under `package`); run the
    package's `__init__` only if it has not run yet and is asked for later."""
    if package not in sys.modules:
        sys.modules[package] = _deferred_package(package)
    for name in modules:
        importlib.import_module(name)


def _unrun_package(package: str) -> tuple[ModuleSpec, ModuleType]:
    """The package's spec and its module object, with `__path__` and
    `__spec__` set and nothing of its `__init__` run."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{package} is not an installed package")
    return spec, importlib.util.module_from_spec(spec)


def _deferred_package(package: str) -> ModuleType:
    spec, module = _unrun_package(package)
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


def names_on_demand(package: str) -> None:
    """Put `package` in `sys.modules` with its `__init__` read but not run:
    each name it imports (`from .sub import Name`, `from . import sub`) is
    imported from its own module the first time it is asked for, and its
    constants (`__version__ = "1.0"`) are set at once.

    For an `__init__` that only re-exports, this is the same package, paid
    for by the name: the kubernetes client's `__init__` imports ~770 model
    and ~60 API classes, of which the operator uses a handful (kube_imports.py).
    An `__init__` that does anything else cannot be deferred faithfully, so
    it is refused (ValueError) and the caller imports it as usual."""
    if package in sys.modules:
        return  # imported already: nothing left to save
    spec, module = _unrun_package(package)
    if spec.origin is None:
        raise ImportError(f"{package} has no __init__ to read")
    sources, constants = _reexports(package, Path(spec.origin).read_text())
    module.__dict__.update(constants)

    def __getattr__(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        source, attribute = sources[name]
        found = importlib.import_module(source)  # thread-safe; a no-op once imported
        value = found if attribute is None else getattr(found, attribute)
        setattr(module, name, value)  # the next lookup does not come here
        return value

    def __dir__() -> list[str]:
        return sorted({*module.__dict__, *sources})

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__dir__ = __dir__  # type: ignore[method-assign]
    sys.modules[package] = module


def _reexports(package: str, source: str) -> tuple[dict[str, tuple[str, str | None]], dict]:
    """From an `__init__`'s source: name -> (module, attribute or None for
    the module itself), and its literal constants."""
    sources: dict[str, tuple[str, str | None]] = {}
    constants: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = node.module or ""
            if node.level:  # relative to the package
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                if alias.name == "*":
                    raise ValueError(f"{package}/__init__ imports * from {base}")
                as_module = node.module is None  # `from . import sub`: the submodule
                target = (f"{base}.{alias.name}", None) if as_module else (base, alias.name)
                sources[alias.asname or alias.name] = target
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                line = node.lineno
                raise ValueError(f"{package}/__init__ computes a value (line {line})") from None
            constants.update({t.id: value for t in node.targets})  # type: ignore[attr-defined]
        elif isinstance(node, ast.ImportFrom) or (  # __future__, or the docstring
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        ):
            continue
        else:
            raise ValueError(f"{package}/__init__ does more than re-export (line {node.lineno})")
    # Importing `pkg.sub.leaf` makes `sub` an attribute of `pkg`, so the real
    # __init__ leaves each submodule it imported from as a name too.
    for source, _ in list(sources.values()):
        if source.startswith(package + "."):
            first = source[len(package) + 1 :].split(".")[0]
            sources.setdefault(first, (f"{package}.{first}", None))
    return sources, constants
