"""The pages' cost: the worker daemon filing into a day of 20,000 records, pages on against pages off.

Set-up (not timed): one spool whose day already holds ``day_size`` records, filed by `spool_worker.py --once`
with pages on, so its day pages, index rows and folders are all there. Then rounds that alternate pages off
and on (off, on, on, off, …, so a drift in the machine's load falls on both sides): each adds ``count`` new
postbacks later in the same day (which keeps growing), starts `spool_worker.py` as the daemon (the pages are
rewritten on its once-a-second tick while it files, as in production) and times it from the first
tenth filed (so the start-up is left out) until incoming/ and work/ are empty. Each side's figure is its
median round. The largest page of each kind is reported too.

A round with pages on starts from current pages: after a round without them, the day's pages are behind
its records, and a worker with pages on rewrites the whole day once at start (what turning pages on costs
once, not per record). That catch-up is run before the round, by `spool_worker.py --once` with nothing
waiting, and reported as a figure of its own.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.worker_bench import REPO, fill_incoming, write_config


def measure(day_size: int, count: int, rounds: int) -> dict[str, float | dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=1, microsecond=0)
        spool = root / "spool"
        (spool / "incoming").mkdir(parents=True)
        fill_incoming(spool / "incoming", day_size, start=midnight)
        subprocess.run(
            [sys.executable, "spool_worker.py", "--config", str(config_for(root, spool, True)), "--once"],
            cwd=REPO, check=True,
        )  # fmt: skip
        rates: dict[bool, list[float]] = {False: [], True: []}
        catch_up: list[float] = []
        previous = True
        for number, pages in enumerate(alternating(rounds)):
            if pages and not previous:
                catch_up.append(run_once(config_for(root, spool, True)))
            previous = pages
            first = day_size + number * count  # new senders and tracking ids: filed, not duplicates
            later = midnight + dt.timedelta(hours=12, seconds=number)
            fill_incoming(spool / "incoming", count, start=later, first=first)
            rates[pages].append(run_daemon(config_for(root, spool, pages), spool, count))
        return {
            "pages_on": statistics.median(rates[True]),
            "pages_off": statistics.median(rates[False]),
            "catch_up_seconds": max(catch_up, default=0.0),
            "sizes": largest_pages(spool),
        }


def run_once(config: Path) -> float:
    """Seconds for `spool_worker.py --once` with nothing waiting: start-up and the pages' catch-up."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "spool_worker.py", "--config", str(config), "--once"], cwd=REPO, check=True
    )
    return time.perf_counter() - started


def alternating(rounds: int) -> list[bool]:
    """off, on, on, off, off, on, …: each side equally often early and late."""
    order: list[bool] = []
    for n in range(rounds):
        order += [False, True] if n % 2 == 0 else [True, False]
    return order


def config_for(root: Path, spool: Path, pages: bool) -> Path:
    config = write_config(root, spool)
    with config.open("a") as handle:
        handle.write(f"[pages]\nenabled = {'yes' if pages else 'no'}\n")
    return config


def run_daemon(config: Path, spool: Path, count: int) -> float:
    """Postbacks filed per second by the daemon, from the first tenth filed (start-up left out) to the end."""
    worker = subprocess.Popen([sys.executable, "spool_worker.py", "--config", str(config)], cwd=REPO)
    try:
        wait_until(worker, lambda: waiting(spool) <= count * 0.9)
        started, left = time.perf_counter(), waiting(spool)
        wait_until(worker, lambda: waiting(spool) == 0 and is_empty(spool / "work"))
        return left / (time.perf_counter() - started)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(120)


def wait_until(worker: subprocess.Popen[bytes], done: Callable[[], bool]) -> None:
    while worker.poll() is None:
        if done():
            return
        time.sleep(0.05)
    raise RuntimeError(f"the worker exited with {worker.returncode} before filing everything")


def waiting(spool: Path) -> int:
    with os.scandir(spool / "incoming") as entries:
        return sum(1 for _ in entries)


def is_empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def largest_pages(spool: Path) -> dict[str, int]:
    days = [day for day in (spool / "processed").iterdir() if day.is_dir()]
    sizes = {"root page": (spool / "index.html").stat().st_size, "day page": 0, "record page": 0}
    for day in days:
        sizes["day page"] = max([sizes["day page"], *(p.stat().st_size for p in day.glob("*.html"))])
        with os.scandir(day) as entries:
            for entry in entries:
                page = Path(entry.path) / "index.html"
                if entry.is_dir() and page.is_file():
                    sizes["record page"] = max(sizes["record page"], page.stat().st_size)
    sizes["day pages"] = sum(len(list(day.glob("*.html"))) for day in days)
    sizes["records in the day"] = sum(1 for day in days for p in day.iterdir() if p.is_dir())
    return sizes
