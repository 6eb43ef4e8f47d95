"""Flywheel: the ML lifecycle as Kubernetes custom resources."""

__version__ = "0.1.0"
