"""Receiver benchmarks: mo-spool against two baselines, each behind the shipped nginx site and gunicorn config.

Every stack gets the same load from wrk over HTTPS: one keep-alive connection (the way Sinch sends) and 16
connections. Rounds alternate between the stacks, and each figure is the median over the rounds, so slow
moments of the machine fall on every stack alike.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.nginx_stack import nginx_and_gunicorn
from tests.servers import free_port, write_config

BODY = (
    '{"origin":"MMS_MO","code":"N401","from":"17745550001","to":"18885551234","keyword":"INFO",'
    '"tracking-id":"mo123xyz","operator-id":"310012","timestamp":"2026-04-24T18:34:00Z",'
    '"message-subject":"Question","content":[{"file":"https://example.sinch.com/mo-content/file1.jpg"}]}'
)
APPS = {"mo-spool": "app:app", "hello (a)": "bench.baselines:hello", "durable (b)": "bench.baselines:durable"}


@dataclass
class Run:
    p50_ms: float
    p99_ms: float
    rps: float


@contextmanager
def stacks(root: Path) -> Iterator[dict[str, int]]:
    """Start the three stacks; yields name -> HTTPS port."""
    ports: dict[str, int] = {}
    with ExitStack() as stack:
        for n, (name, app) in enumerate(APPS.items()):
            home = root / f"stack{n}"
            spool = home / "spool"
            for sub in ("tmp", "new"):
                (spool / sub).mkdir(parents=True)
            config = write_config(home / "config.ini", spool, {"logging": {"level": "WARNING"}})
            env = {"MOSPOOL_CONFIG": str(config), "MOSPOOL_BENCH_DIR": str(spool)}
            https = free_port()
            stack.enter_context(nginx_and_gunicorn(home, spool, (https, free_port(), free_port()), app, env))
            ports[name] = https
        yield ports


def wrk(port: int, connections: int, seconds: int, script: Path) -> Run:
    threads = 1 if connections == 1 else 2
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"https://127.0.0.1:{port}/postback"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = result.stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return Run(
        _latency(out, "50%"), _latency(out, "99%"), float(re.findall(r"Requests/sec:\s+([\d.]+)", out)[0])
    )


def _latency(out: str, percentile: str) -> float:
    value, unit = re.findall(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)[0]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def measure(rounds: int = 3, seconds: int = 5) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        script = root / "post.lua"
        script.write_text(
            f"wrk.method = 'POST'\nwrk.body = [[{BODY}]]\nwrk.headers['Content-Type'] = 'application/json'\n"
        )
        serial: dict[str, list[Run]] = {name: [] for name in APPS}
        parallel: dict[str, list[Run]] = {name: [] for name in APPS}
        with stacks(root) as ports:
            for port in ports.values():  # warm up: TLS sessions, imports, page cache
                wrk(port, 1, 1, script)
            for _ in range(rounds):
                for name, port in ports.items():
                    serial[name].append(wrk(port, 1, seconds, script))
                    parallel[name].append(wrk(port, 16, seconds, script))
    return {
        name: {
            "serial_p50_ms": statistics.median(r.p50_ms for r in serial[name]),
            "serial_p99_ms": statistics.median(r.p99_ms for r in serial[name]),
            "serial_rps": statistics.median(r.rps for r in serial[name]),
            "parallel16_rps": statistics.median(r.rps for r in parallel[name]),
        }
        for name in APPS
    }
