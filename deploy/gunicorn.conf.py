"""gunicorn settings for the receiver behind nginx (mo-spool-receiver.service runs gunicorn -c this file).

A request does one durable write (two fsyncs, well under a millisecond on local disks), so a few threads per
process are plenty; two processes keep one answering while the other is restarted or killed.
"""

import os
from typing import Any

# nginx talks to us over a unix socket in the receiver's RuntimeDirectory. MOSPOOL_BIND overrides it (tests).
bind = [os.environ.get("MOSPOOL_BIND", "unix:/run/mo-spool/receiver.sock")]
# Applies to the socket file only: 0660, so nginx (www-data, a member of group mospool) can connect.
umask = 0o117

worker_class = "gthread"
workers = 2
threads = 8

# nginx keeps up to 16 idle upstream connections for 60 s (keepalive_timeout in the upstream block).
# gunicorn must hold them longer, or it could close one just as nginx reuses it and nginx would answer 502.
keepalive = 75

# Sinch waits 10 s for an answer. A request that has not been stored in 8 s is killed (nginx answers 502
# and Sinch retries in about 5 minutes); a graceful restart waits as long for requests in flight.
timeout = 8
graceful_timeout = 8

# gunicorn 25+ opens a control socket by default; nothing here uses it.
control_socket_disable = True

# Logs go to stderr, i.e. the journal. No access log: the URL can carry the token. The receiver logs one
# line per stored postback, and nginx logs requests without the token.
accesslog = None
errorlog = "-"
loglevel = "info"

# nginx already limits headers; these are gunicorn's own, as a second line.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190


def on_starting(server: Any) -> None:
    """Check the config and the spool in the arbiter, before any worker: a bad one stops gunicorn with
    status 2, like the worker and the CLI, instead of workers failing to boot being forked again and again.
    Risky settings are warned of here too, once, not by each worker."""
    import sys

    import mospool.outputs  # noqa: F401 (each output registers its config.ini section)
    from mospool import logs, risks
    from mospool.config import EXIT_CONFIG, ConfigError, config_path, load_settings, spool_problem
    from mospool.store import Spool, SpoolError

    config = config_path()
    try:
        settings = load_settings(config)
        Spool(settings.spool.dir).create()
    except (ConfigError, SpoolError) as exc:
        message = spool_problem(exc, config) if isinstance(exc, SpoolError) else str(exc)
        print(f"mo-spool receiver: {message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    logs.configure(settings.log_level)
    risks.warn(settings)
