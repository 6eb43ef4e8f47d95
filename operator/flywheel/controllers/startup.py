"""Production settings for kopf, applied once at start-up."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from ..api.common import GROUP
from ..integrations import kube
from . import wake
from .diffbase import StatusDiffBase, progress_storage
from .handlers import RESYNC


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our own API group owns every key kopf writes on objects, so nothing is
    # left under kopf.zalando.org and two kopf operators never collide.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # kopf's own records go in status (diffbase.py): one write, not two.
    settings.persistence.progress_storage = progress_storage()
    settings.persistence.diffbase_storage = StatusDiffBase()
    # A watch that silently stops delivering events is the classic way an
    # operator goes deaf (https://github.com/nolar/kopf/issues/585): the server
    # ends each watch after server_timeout and the client gives up after
    # client_timeout, so a dead connection is noticed within minutes and the
    # watch is restarted from its resourceVersion.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 30
    # kopf turns log records of this level and above into Events; ours are
    # posted explicitly with reasons people can act on, so only its warnings.
    settings.posting.level = logging.WARNING
    # One handler thread per pooled apiserver connection (kube.POOL_CONNECTIONS).
    settings.execution.max_workers = kube.POOL_CONNECTIONS
    wake.HANDLER_THREADS[:] = [settings.execution.executor]
    RESYNC.executor = settings.execution.executor
    settings.queueing.error_delays = (1, 2, 5, 10, 30, 60, 120)
    # The wake-up and resync handlers (wake.py, handlers.py) run on every
    # watch event; kopf logs each run at info. What they do is logged when
    # they do it; their "succeeded" is noise.
    logging.getLogger("kopf.objects").addFilter(quiet_wake_handlers)


def quiet_wake_handlers(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    every_event = message.startswith(("Handler 'wake_", "Handler 'resync_"))
    return not (every_event and message.endswith(" succeeded."))
