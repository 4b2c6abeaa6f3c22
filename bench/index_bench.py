"""The shared index's cost: the worker with its index in PostgreSQL against the worker with SQLite in the spool.

- throughput: `spool_worker.py --once` over N waiting postbacks without media, once with ``[index] url`` on a
  local PostgreSQL cluster (synchronous_commit = on, fsync on) and once with the default SQLite index, in
  rounds that alternate (sqlite, postgresql, postgresql, sqlite) so a change in the machine's load falls on
  both; each side's figure is its median round. The cluster's data is on a fresh ext4 of its own, as a
  database server's would be on its own disk: on the spools' filesystem, every group commit's syncfs(2) of
  the spool would also write out the database's dirty pages;
- claim latency: N claims of fresh keys from as many threads as the worker has (16), each timed; p50 and p99
  per backend. A SQLite claim is a look-up and a dict entry (the key's row is written with its record); a
  PostgreSQL claim is a committed INSERT, so it waits for a WAL flush.

Runs inside `python -m bench --only index` (bench/__main__.py), or alone: `python -m bench.index_bench`.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.filesystem import can_mount, mounted_ext4
from bench.worker_bench import fill_incoming, run_once, write_config
from mospool.config import IndexSettings, Settings
from mospool.index import Index, open_index
from mospool.store import new_id
from tests.pg import Cluster

THREADS = 16  # [worker] concurrency's default


def bench_index(count: int, rounds: int = 2) -> dict[str, float]:
    with contextlib.ExitStack() as stack:
        parent = stack.enter_context(mounted_ext4("mospool-bench-pg-")) if can_mount() else None
        return _measure(count, rounds, _cluster(parent))


def _measure(count: int, rounds: int, cluster: Cluster) -> dict[str, float]:
    try:
        rates: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
        order = ["sqlite", "postgresql", "postgresql", "sqlite"] * rounds
        for n, backend in enumerate(order[: 2 * rounds]):
            url = cluster.schema() if backend == "postgresql" else ""
            rates[backend].append(_worker_rate(count, url, n))
        latency = {backend: _claim_latency(count, cluster.schema() if backend == "postgresql" else "")
                   for backend in ("sqlite", "postgresql")}  # fmt: skip
    finally:
        cluster.destroy()
    return {
        "sqlite": statistics.median(rates["sqlite"]),
        "postgresql": statistics.median(rates["postgresql"]),
        **{
            f"{backend}_claim_{q}_ms": value
            for backend, found in latency.items()
            for q, value in found.items()
        },
    }


def _cluster(parent: Path | None) -> Cluster:
    """A cluster with its data in ``parent`` (default: the temp dir); the postgres user must reach it."""
    if parent is not None:
        for folder in (parent, parent.parent):
            folder.chmod(folder.stat().st_mode | 0o011)
    return Cluster(parent).init()


def _worker_rate(count: int, index_url: str, run: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spool = root / "spool"
        (spool / "incoming").mkdir(parents=True)
        fill_incoming(spool / "incoming", count, first=run * count)
        config = write_config(root, spool)
        if index_url:
            with config.open("a") as handle:
                handle.write(f"[index]\nurl = {index_url}\n")
        return count / run_once(config)


def _claim_latency(count: int, index_url: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.for_spool(Path(tmp) / "spool", index=IndexSettings(url=index_url))
        settings.spool.dir.mkdir()
        index = open_index(settings, connections=THREADS)
        index.ping()
        timings: list[float] = []
        try:
            threads = [
                threading.Thread(target=_claims, args=(index, count // THREADS, timings))
                for _ in range(THREADS)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            index.close()
    cuts = statistics.quantiles(timings, n=100)
    return {"p50": cuts[49] * 1000, "p99": cuts[98] * 1000}


def _claims(index: Index, count: int, timings: list[float]) -> None:
    mine = []
    for _ in range(count):
        spool_id = new_id()
        started = time.perf_counter()
        index.claim(f"SMS_MO|N401|{spool_id}", spool_id)
        mine.append(time.perf_counter() - started)
    timings.extend(mine)


if __name__ == "__main__":
    print(bench_index(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
