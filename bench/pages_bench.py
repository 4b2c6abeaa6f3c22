"""The pages' cost: the worker daemon filing one day of N postbacks with pages on, against pages off, in one run.

Each side starts `spool_worker.py` (the daemon, so the pages are rewritten on its once-a-second tick while it
files, as in production) over the same N waiting postbacks of one UTC day, and times it until incoming/ and
work/ are empty. The pages side then reports the largest page of each kind it wrote.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.worker_bench import REPO, fill_incoming, write_config


def filing_rate(count: int, pages: bool) -> tuple[float, dict[str, int]]:
    """Postbacks filed per second by the daemon, and (pages on) the largest page of each kind in bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spool = root / "spool"
        (spool / "incoming").mkdir(parents=True)
        day = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=1, microsecond=0)
        fill_incoming(spool / "incoming", count, start=day)
        config = write_config(root, spool)
        with config.open("a") as handle:
            handle.write(f"[pages]\nenabled = {'yes' if pages else 'no'}\n")
        started = time.perf_counter()
        worker = subprocess.Popen([sys.executable, "spool_worker.py", "--config", str(config)], cwd=REPO)
        try:
            wait_until_filed(spool, worker)
            seconds = time.perf_counter() - started
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(120)
        return count / seconds, largest_pages(spool) if pages else {}


def wait_until_filed(spool: Path, worker: subprocess.Popen[bytes]) -> None:
    time.sleep(1.0)  # the worker claims its first batch
    while worker.poll() is None:
        if is_empty(spool / "incoming") and is_empty(spool / "work"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the worker exited with {worker.returncode} before filing everything")


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
    sizes["day pages written"] = sum(len(list(day.glob("*.html"))) for day in days)
    return sizes


def measure(count: int) -> dict[str, float | dict[str, int]]:
    off, _ = filing_rate(count, pages=False)
    on, sizes = filing_rate(count, pages=True)
    return {"pages_on": on, "pages_off": off, "sizes": sizes}
