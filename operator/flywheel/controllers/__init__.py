"""kopf handlers, one module per kind. Importing this package registers them."""

from . import (
    datasets,
    indexes,
    inferenceservices,
    modelversions,
    session,
    startup,
    trainingruns,
    wake,
)

__all__ = [
    "datasets",
    "indexes",
    "inferenceservices",
    "modelversions",
    "session",
    "startup",
    "trainingruns",
    "wake",
]
