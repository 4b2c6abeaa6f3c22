"""The baselines the receiver is measured against, served by the same gunicorn config behind the same nginx.

- ``hello``: a Flask app that answers 200 and stores nothing (the cost of the stack itself);
- ``durable``: the least a durable handler must do (temp file, fsync, rename, directory fsync), nothing else.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask, request

hello = Flask("hello")
durable = Flask("durable")
SPOOL = Path(os.environ.get("MOSPOOL_BENCH_DIR", "/tmp/mospool-bench"))


@hello.post("/postback")
def hello_postback() -> str:
    request.get_data()
    return "OK\n"


@durable.post("/postback")
def durable_postback() -> str:
    name = secrets.token_hex(8)
    temp, final = SPOOL / "tmp" / name, SPOOL / "new" / name
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.write(fd, request.get_data())
    os.fsync(fd)
    os.close(fd)
    os.rename(temp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    os.fsync(dir_fd)
    os.close(dir_fd)
    return "OK\n"
