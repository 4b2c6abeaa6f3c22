"""Log set-up for the entry points (app.py, spool_worker.py, the CLI); library modules only get loggers."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def configure(level: str) -> None:
    """One stderr handler on the root logger (systemd's journal collects stderr)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
    inotify = logging.getLogger("watchdog.observers.inotify")
    if not any(isinstance(f, _WatchdogStopRace) for f in inotify.filters):
        inotify.addFilter(_WatchdogStopRace())


class _WatchdogStopRace(logging.Filter):
    """Drop the ERROR watchdog 7 logs when its inotify thread is stopped while events still arrive.

    It is a race inside watchdog's own shutdown, seen on every stop with a backlog (the worker's claims are
    events): nothing is lost, since the worker has stopped taking work and a restart rescans incoming/. An
    operator should not read it as a fault.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()
