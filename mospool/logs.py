"""Log set-up for the entry points (app.py, spool_worker.py, the CLI); library modules only get loggers.

Many values logged come from a postback or a remote (tracking ids, URLs, an application's answer), so every
record is written on one line: its message with control, separator and bidi characters escaped
(``mospool.unprintable``), and a traceback's lines indented under it, so nothing a sender chose can start a
line of its own or move the terminal's cursor.
"""

from __future__ import annotations

import logging
import sys

from mospool.unprintable import escaped

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
CONTINUATION = "\n    | "  # a traceback's lines, under the record they belong to


class EscapingFormatter(logging.Formatter):
    """A record on one line, whatever its message holds; a traceback indented below it."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = escaped(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        # The traceback is formatted afresh: another handler may have cached its raw text in exc_text.
        below = [self.formatException(record.exc_info)] if record.exc_info else []
        if record.stack_info:
            below.append(self.formatStack(record.stack_info))
        return text + "".join(CONTINUATION + escaped(line) for block in below for line in block.splitlines())


def configure(level: str) -> None:
    """One stderr handler on the root logger (systemd's journal collects stderr)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(EscapingFormatter(FORMAT))
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
