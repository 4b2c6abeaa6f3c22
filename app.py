"""The receiver's entry point.

`gunicorn app:app` serves the receiver built from the config file named by $MOSPOOL_CONFIG, else the
config.ini beside this file. `python app.py [--config PATH] [--bind ADDR]` runs the same app under gunicorn
with local defaults (what the README's run command uses).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from flask import Flask
from gunicorn.app.base import BaseApplication

import mospool.outputs  # noqa: F401 (each output registers its config.ini section)
from mospool import logs, risks
from mospool.config import CONFIG_ENV, EXIT_CONFIG, ConfigError, config_path, load_settings, spool_problem
from mospool.receiver import create_app
from mospool.store import SpoolError

# gunicorn's own "worker failed to boot" status: its arbiter then stops instead of forking workers forever.
GUNICORN_WORKER_BOOT_ERROR = 3


def build_app(exit_code: int = EXIT_CONFIG) -> Flask:
    config = config_path()
    try:
        settings = load_settings(config)
        logs.configure(settings.log_level)
        return create_app(settings)
    except ConfigError as exc:
        _refuse(str(exc), exit_code)
    except SpoolError as exc:
        _refuse(spool_problem(exc, config), exit_code)


def _refuse(message: str, exit_code: int) -> NoReturn:
    print(f"mo-spool receiver: {message}", file=sys.stderr)
    sys.exit(exit_code)


class LocalServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with the local-run settings, so `python app.py` needs no gunicorn.conf.py."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return build_app(GUNICORN_WORKER_BOOT_ERROR)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the mo-spool receiver under gunicorn.")
    parser.add_argument("--config", help=f"config file (default: ${CONFIG_ENV}, else config.ini here)")
    parser.add_argument("--bind", default="127.0.0.1:8080", help="address to listen on")
    args = parser.parse_args(argv)
    os.environ[CONFIG_ENV] = str(config_path(args.config).resolve())
    checked = build_app()  # fail fast, in this process, on a bad config
    risks.warn(checked.extensions["mospool"]["settings"])  # once, here, not in each gunicorn worker
    options = {
        "bind": args.bind,
        "worker_class": "gthread",
        "workers": 2,
        "threads": 4,
        "keepalive": 75,
        "timeout": 8,
        "graceful_timeout": 8,
        "control_socket_disable": True,
    }
    LocalServer(options).run()


if __name__ == "__main__":
    main()
else:
    app = build_app(GUNICORN_WORKER_BOOT_ERROR)
