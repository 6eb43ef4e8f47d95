"""The operator's process imports the kubernetes client's classes as it uses them.

`kubernetes.client`'s `__init__` imports all of its ~770 model classes and
~60 API classes, and `kubernetes.client.models`' and `.api`'s do the same;
kopf imports the client whenever it is installed (for two model classes,
`kopf._cogs.helpers.thirdparty`). The operator uses a few APIs and, through
the client's deserialiser, a few models. Importing kopf, the controllers
and the runner took 105 MiB resident with the whole client and 76 MiB with
the names imported on demand (20 kubernetes modules instead of 865).

The packages are the real ones with their `__init__`s read but not run
(lazy_package.names_on_demand): `client.V1Job`, `from kubernetes.client
import ApiClient` and the deserialiser's `getattr(kubernetes.client.models,
"V1PodList")` each import that class's own module the first time.

Must run before anything imports kubernetes or kopf: `flywheel run` calls it
first. A client version whose `__init__` does more than re-export is
imported as usual, with a warning.
"""

from __future__ import annotations

import logging
import sys

from ..lazy_package import names_on_demand

# Parents first: finding a subpackage's spec imports its parent.
PACKAGES = ["kubernetes", "kubernetes.client", "kubernetes.client.api", "kubernetes.client.models"]
log = logging.getLogger(__name__)


def import_kubernetes_client_on_demand() -> bool:
    """Defer the client's packages; False when they could not be (already
    imported, or an `__init__` that does more than re-export)."""
    if any(package in sys.modules for package in PACKAGES):
        return False
    installed = []
    try:
        for package in PACKAGES:
            names_on_demand(package)
            installed.append(package)
    except (ImportError, ValueError) as err:
        for package in installed:  # all or nothing: a usual import follows
            del sys.modules[package]
        log.warning("the kubernetes client is imported whole: %s", err)
        return False
    return True
