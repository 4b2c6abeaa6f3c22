"""The worker on a shared disk: `spool_worker.py --once` against the minimal durable filer, each on a fresh
ext4 of its own, once alone and once while a neighbour process writes 600 MB files in a loop without
syncing them on the same filesystem (logs, a database, a backup: what a VM's disk also carries).

A sync of the whole filesystem waits for the neighbour's data too; a per-file fsync waits for what the
journal commit carries. Each side gets the same neighbour, started 3 s before it so the page cache is
already dirty. ``python -m bench.neighbour_bench [--count N]`` prints the figures on their own.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.filesystem import fresh_ext4
from bench.worker_bench import fill_incoming, minimal_filer, run_once, write_config

NEIGHBOUR_MB = 600
WARM_UP_SECONDS = 3.0


@contextmanager
def neighbour(folder: Path, on: bool) -> Iterator[None]:
    """A process writing ``NEIGHBOUR_MB`` files into ``folder`` over and over, never syncing them."""
    if not on:
        yield
        return
    target = folder / "neighbour.bin"
    loop = f"while true; do dd if=/dev/zero of='{target}' bs=1M count={NEIGHBOUR_MB} status=none; done"
    process = subprocess.Popen(["bash", "-c", loop], start_new_session=True)
    try:
        time.sleep(WARM_UP_SECONDS)
        yield
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def worker_rate(count: int, with_neighbour: bool) -> float:
    with fresh_ext4():
        root = Path(tempfile.mkdtemp())
        spool = root / "spool"
        (spool / "incoming").mkdir(parents=True)
        fill_incoming(spool / "incoming", count)
        config = write_config(root, spool)
        with neighbour(root, with_neighbour):
            seconds = run_once(config)
    return count / seconds


def filer_rate(count: int, with_neighbour: bool) -> float:
    with fresh_ext4():
        root = Path(tempfile.mkdtemp())
        incoming = root / "in"
        incoming.mkdir()
        fill_incoming(incoming, count)
        with neighbour(root, with_neighbour):
            seconds = minimal_filer(incoming, root / "out")
    return count / seconds


def measure(count: int) -> dict[str, float]:
    """Worker and filer postbacks/s, alone and with the neighbour (each on a fresh filesystem)."""
    return {
        "worker_alone": worker_rate(count, False),
        "filer_alone": filer_rate(count, False),
        "worker_shared": worker_rate(count, True),
        "filer_shared": filer_rate(count, True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    result = measure(args.count)
    for side in ("alone", "shared"):
        worker, filer = result[f"worker_{side}"], result[f"filer_{side}"]
        print(f"{side}: worker {worker:.0f}/s, filer {filer:.0f}/s, ratio {worker / filer:.2f}")


if __name__ == "__main__":
    main()
