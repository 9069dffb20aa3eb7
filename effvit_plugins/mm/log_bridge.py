"""The cores' log records in mmengine's log.

The framework-free cores log with the standard :mod:`logging`, under the logger ``effvit_plugins`` (e.g. the one
line reporting attention-bias tables resized on load). :func:`route_core_logs` (run by ``import effvit_plugins``
with mmengine installed) sets that logger to INFO and gives it a handler, :class:`MMLoggerBridge`, passing each
record to the handlers of mmengine's current logger (``MMLogger.get_current_instance()``: the console and, during a
run, the run's log file).

The logger keeps propagating to the root logger, so an application that configures logging
(``logging.basicConfig``, pytest's log capture) gets our records as usual. No line is printed twice: when a handler
of an ancestor logger (the root's) will emit a record, the bridge passes it only to mmengine's file handlers, not
to its console.
"""
from __future__ import annotations

import logging

__all__ = ["LOGGER_NAME", "MMLoggerBridge", "route_core_logs"]

LOGGER_NAME = "effvit_plugins"


def _shown_by_ancestors(logger: logging.Logger, record: logging.LogRecord) -> bool:
    """Whether a handler of an ancestor of ``logger`` will emit ``record`` (``Logger.callHandlers``' walk)."""
    while logger.propagate and logger.parent is not None:
        logger = logger.parent
        if any(record.levelno >= h.level for h in logger.handlers):
            return True
    return False


class MMLoggerBridge(logging.Handler):
    """Passes the records of the logger it is attached to (``effvit_plugins``) to mmengine's current logger."""

    def emit(self, record):
        from mmengine.logging import MMLogger

        target = MMLogger.get_current_instance()
        if not target.isEnabledFor(record.levelno):
            return
        console_elsewhere = _shown_by_ancestors(logging.getLogger(LOGGER_NAME), record)
        for handler in target.handlers:
            if console_elsewhere and not isinstance(handler, logging.FileHandler):
                continue
            if record.levelno >= handler.level:
                handler.handle(record)


def route_core_logs() -> None:
    """Attach :class:`MMLoggerBridge` to the ``effvit_plugins`` logger (once) and set it to INFO."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, MMLoggerBridge) for h in logger.handlers):
        logger.addHandler(MMLoggerBridge())
        logger.setLevel(logging.INFO)
