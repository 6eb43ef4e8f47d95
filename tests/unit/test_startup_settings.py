"""The kopf settings the operator starts with: the ones whose defaults hurt."""

from __future__ import annotations

import kopf

from flywheel.controllers.startup import configure


def test_watches_are_bounded_and_stopping_timers_is_noticed_within_a_second():
    settings = kopf.OperatorSettings()
    configure(settings=settings)
    # A dead watch is noticed within minutes (kopf's defaults never time out).
    assert settings.watching.server_timeout and settings.watching.client_timeout
    assert settings.watching.client_timeout > settings.watching.server_timeout
    # kopf's default of 60 s held a deleted object's finalizer, and the
    # operator's exit, for up to a minute behind a running timer.
    assert settings.background.cancellation_polling <= 1.0
    assert settings.persistence.finalizer.startswith("mlops.flywheel.dev/")
