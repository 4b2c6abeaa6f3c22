"""The spool worker's entry point.

`python spool_worker.py [--config PATH] [--once]` files every spooled postback under processed/, failed/ or
duplicates/. Without --once it keeps watching incoming/ until SIGTERM/SIGINT (systemd restarts it if it dies);
with --once it processes everything waiting, and every retry that is due, then exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import threading

from mospool import logs, risks
from mospool.config import CONFIG_ENV, EXIT_CONFIG, ConfigError, config_path, load_settings, spool_problem
from mospool.english import counted
from mospool.store import SpoolError
from mospool.worker import Worker

log = logging.getLogger("mospool.spool_worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="File spooled Sinch postbacks.")
    parser.add_argument("--config", help=f"config file (default: ${CONFIG_ENV}, else config.ini here)")
    parser.add_argument("--once", action="store_true", help="process everything waiting, then exit")
    args = parser.parse_args(argv)
    config = config_path(args.config)
    try:
        settings = load_settings(config)
        logs.configure(settings.log_level)
        worker = Worker(settings)
    except ConfigError as exc:
        print(f"mo-spool worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SpoolError as exc:
        print(f"mo-spool worker: {spool_problem(exc, config)}", file=sys.stderr)
        return EXIT_CONFIG
    except sqlite3.Error as exc:  # e.g. a full disk: the WAL files cannot be created; systemd retries
        print(f"mo-spool worker: cannot open the index in {settings.spool.dir}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    risks.warn(settings)
    if args.once:
        worker.recover()
        handled = worker.drain()
        log.info("--once: handled %s", counted(handled, "postback"))
        worker.close()
        return 0

    def stop(signum: int, _frame: object) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        worker.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    log.info("watching %s", worker.spool.incoming)
    code = worker.run()
    log.info("stopped (exit status %d)", code)
    return code


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    if threading.active_count() > 1:  # a postback thread still stuck at stop: it is released at next start
        os._exit(code)
    sys.exit(code)
