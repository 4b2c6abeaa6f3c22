"""Webhook delivery rate, side by side with a plain pooled client in the same run.

Both post the same bodies, with the same concurrency, to the same local application: an nginx that answers
204 to any POST, so what is measured is the sending side. mo-spool is the real webhooks output (its sender
threads, reading each outbox entry, checking its record is filed, signing, removing the entry); the baseline
is a ``urllib3.PoolManager`` shared by as many threads, with the same client settings (no retries, the same
request timeout), posting the bodies from memory, unsigned.

`python -m bench.forward_bench [--count N] [--concurrency C]` prints the figures on their own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import urllib3

from bench.filesystem import fresh_ext4
from mospool.config import Settings, WorkerSettings
from mospool.outputs import webhooks
from mospool.outputs.webhooks import ForwardSettings
from mospool.store import Entry, Outbox, Spool
from mospool.worker import Worker
from tests.build import publish, sms
from tests.nginx_stack import main_conf, running_nginx
from tests.servers import free_port
from tests.webhook_app import SECRET


@contextmanager
def sink() -> Iterator[str]:
    """nginx on a loopback port answering 204 to everything: the application, as fast as it gets.

    Not tests/webhook_app.py's App: a Python server caps the plain pool's rate, and the ratio would then say
    more about the sink than about the forwarder (measured: the plain pool at about half its rate to nginx).
    """
    with tempfile.TemporaryDirectory() as tmp:
        root, port = Path(tmp), free_port()
        http = (
            "  access_log off;\n  keepalive_requests 1000000;\n"
            f"  server {{ listen 127.0.0.1:{port}; location / {{ return 204; }} }}\n"
        )
        with running_nginx(main_conf(root, http, worker_connections=1024), port):
            yield f"http://127.0.0.1:{port}/hooks/mo"


def filed_outbox(spool_dir: Path, count: int, settings: ForwardSettings) -> dict[str, bytes]:
    """File ``count`` SMS postbacks through the real worker; returns the outbox entries it wrote."""
    spool = Spool(spool_dir)
    spool.create()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    for n in range(count):
        body = sms(f"bench-{n}", f"message {n}", sender=f"1774555{n:04d}", to="28444")
        publish(spool, body, when=start + dt.timedelta(microseconds=n))
    config = Settings.for_spool(spool_dir, worker=WorkerSettings(concurrency=2), forward=settings)
    forwarder = webhooks.create(settings, spool, background=False)
    worker = Worker(config, outputs=[forwarder])
    worker.drain()
    worker.close()
    outbox = Outbox(spool_dir)
    return {name: outbox.entry_path(name).read_bytes() for name in outbox.names(outbox.pending)}


def forwarder_rate(spool_dir: Path, entries: dict[str, bytes], settings: ForwardSettings) -> float:
    outbox = Outbox(spool_dir)
    for name, data in entries.items():
        outbox.entry_path(name).write_bytes(data)
    delivery = webhooks.create(settings, Spool(spool_dir), rescan_seconds=3600).delivery
    started = time.perf_counter()
    delivery.start()
    while delivery.scheduled():
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    delivery.close()
    assert outbox.count(outbox.pending) == 0 and outbox.count(outbox.undelivered) == 0
    return len(entries) / seconds


def plain_rate(url: str, bodies: list[bytes], concurrency: int, timeout: float) -> float:
    """The same client settings as the forwarder's (pool size, no retries, the request timeout), nothing else."""
    pool = urllib3.PoolManager(maxsize=concurrency, retries=False, timeout=urllib3.Timeout(total=timeout))

    def post(body: bytes) -> int:
        return pool.request("POST", url, body=body, headers={"Content-Type": "application/json"}).status

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as threads:
        statuses = list(threads.map(post, bodies))
    seconds = time.perf_counter() - started
    assert set(statuses) == {204}
    return len(bodies) / seconds


def measure(count: int, concurrency: int = 4, rounds: int = 5) -> dict[str, float]:
    """Median deliveries/s of each side, and the median of the ratios of back-to-back pairs of runs.

    The pairs alternate which side goes first, and the ratio is taken per pair, so a neighbour's load that
    comes and goes on a shared machine weighs on both sides alike.
    """
    with sink() as url, tempfile.TemporaryDirectory() as tmp:
        settings = ForwardSettings(url=url, secret=SECRET, concurrency=concurrency, timeout_seconds=10)
        spool_dir = Path(tmp) / "spool"
        # In a child process: the worker holds a descriptor on the spool (for syncfs) until it exits.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as child:
            entries = child.submit(filed_outbox, spool_dir, count, settings).result()
        bodies = [Entry.from_bytes(name, data).body for name, data in entries.items()]
        mine, plain, ratios = [], [], []
        for number in range(rounds):
            if number % 2:
                mine.append(forwarder_rate(spool_dir, entries, settings))
                plain.append(plain_rate(url, bodies, concurrency, settings.timeout_seconds))
            else:
                plain.append(plain_rate(url, bodies, concurrency, settings.timeout_seconds))
                mine.append(forwarder_rate(spool_dir, entries, settings))
            ratios.append(mine[-1] / plain[-1])
    return {
        "mospool": statistics.median(mine),
        "baseline": statistics.median(plain),
        "ratio": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with fresh_ext4() as where:
        print(f"spool on: {where}")
        result = measure(args.count, args.concurrency)
    print(
        f"webhooks, {args.count} x {args.concurrency} conns, 5 pairs: forwarder {result['mospool']:.0f}/s, "
        f"plain urllib3 pool {result['baseline']:.0f}/s (medians); median pair ratio {result['ratio']:.2f} "
        "(target >= 0.8)"
    )


if __name__ == "__main__":
    main()
