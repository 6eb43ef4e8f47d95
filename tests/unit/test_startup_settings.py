"""The kopf settings the operator starts with: the ones whose defaults hurt."""

from __future__ import annotations

import logging

import kopf

from flywheel.controllers.startup import configure, quiet_wake_handlers


def test_watches_are_bounded_and_kopfs_keys_are_ours():
    settings = kopf.OperatorSettings()
    configure(settings=settings)
    # A dead watch is noticed within minutes (kopf's defaults never time out).
    assert settings.watching.server_timeout and settings.watching.client_timeout
    assert settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.persistence.finalizer.startswith("mlops.flywheel.dev/")


def test_the_wake_up_handlers_runs_are_not_logged_but_failures_and_reconciles_are():
    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, "", 0, message, None, None)

    assert not quiet_wake_handlers(record("Handler 'wake_owner_of_jobs' succeeded."))
    assert not quiet_wake_handlers(record("Handler 'resync_datasets' succeeded."))
    assert quiet_wake_handlers(record("Handler 'reconcile_training_run' succeeded."))
    assert quiet_wake_handlers(record("Handler 'wake_owner_of_jobs' failed with an exception."))


def test_kopfs_connection_pool_is_bounded_with_room_for_every_watch():
    from flywheel.controllers.session import (
        REQUEST_CONNECTIONS,
        WATCHES_PER_NAMESPACE,
        connection_limit,
    )

    assert connection_limit([]) == REQUEST_CONNECTIONS + WATCHES_PER_NAMESPACE  # cluster-wide
    assert connection_limit(["a", "b", "c"]) == REQUEST_CONNECTIONS + 3 * WATCHES_PER_NAMESPACE
    # Patterns match namespaces not known in advance, each with its watches.
    assert connection_limit(["team-*"]) == connection_limit(["a", "ml-?"]) == 0
