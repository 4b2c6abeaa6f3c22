"""Worker benchmarks, each figure side by side with a baseline measured in the same run.

- no media: `spool_worker.py --once` over N waiting postbacks, against a minimal durable filer (read the file,
  json.loads, write one file, fsync, rename, fsync the directory) over the same postbacks;
- with media: N postbacks with two parts each from a local HTTPS origin that adds 100 ms per request, against
  a pooled plain client (bench/pooled_client.py: urllib3's PoolManager) fetching the same files over the same
  number of connections, each client in its own process;
- scale: peak memory and time to the first record with 100,000 waiting.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.media_origin import MediaOrigin
from mospool.store import encode, new_id
from tests.build import mms, sms

REPO = Path(__file__).resolve().parent.parent


def fill_incoming(
    incoming: Path,
    count: int,
    media_base: str | None = None,
    start: dt.datetime | None = None,
    first: int = 0,
) -> None:
    """Write count postback files straight into incoming/ (set-up speed; the receiver is benched apart),
    then sync them, as the receiver would have: no side's first sync pays for the set-up's writes.

    Postback n (from ``first``) has its own sender and tracking id, so none is a duplicate of another.
    """
    start = start or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    for n in range(first, first + count):
        now = start + dt.timedelta(microseconds=n - first)
        body = postback_body(n, media_base)
        meta = {
            "received_at": now.isoformat(), "content_type": "application/json", "remote_addr": "127.0.0.1",
            "body_bytes": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
        }  # fmt: skip
        postback_id = new_id(now)
        (incoming / f"{postback_id}.postback").write_bytes(encode({**meta, "id": postback_id}, body))
    os.sync()


def postback_body(n: int, media_base: str | None) -> bytes:
    """Postback n's body: an SMS, or with media_base an MMS naming its photo and note on the origin."""
    fields = {"sender": f"1774555{n:04d}", "text": f"message {n}", "timestamp": "2026-11-24T10:00:00Z"}
    if not media_base:
        return sms(f"bench-{n}", **fields)
    parts = (f"{media_base}/{n}/photo.jpg", f"{media_base}/{n}/note.txt")
    return mms(f"bench-{n}", *parts, subject=None, **fields)


def write_config(
    root: Path, spool: Path, concurrency: int | None = None, parallel_downloads: int = 4
) -> Path:
    """The worker's config: the shipped default concurrency unless the benchmark needs another."""
    worker = f"[worker]\nconcurrency = {concurrency}\n" if concurrency else ""
    config = root / "config.ini"
    config.write_text(
        f"[spool]\ndir = {spool}\n{worker}[media]\nallow_private_networks = yes\n"
        f"parallel_downloads = {parallel_downloads}\n[logging]\nlevel = ERROR\n"
    )
    return config


def run_once(config: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "spool_worker.py", "--config", str(config), "--once"],
        cwd=REPO,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return time.perf_counter() - started


def minimal_filer(incoming: Path, out: Path) -> float:
    """The baseline: the least a durable filer must do per postback."""
    started = time.perf_counter()
    out.mkdir()
    for entry in os.scandir(incoming):
        data = Path(entry.path).read_bytes()
        header, _, body = data.partition(b"\n")
        json.loads(header)
        json.loads(body)
        temp = out / f".{entry.name}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.write(fd, body)
        os.fsync(fd)
        os.close(fd)
        os.rename(temp, out / entry.name)
        dir_fd = os.open(out, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)
        os.unlink(entry.path)
    return time.perf_counter() - started


def bench_no_media(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spool = root / "spool"
        (spool / "incoming").mkdir(parents=True)
        fill_incoming(spool / "incoming", count)
        worker_seconds = run_once(write_config(root, spool))
        baseline_in = root / "baseline-in"
        baseline_in.mkdir()
        fill_incoming(baseline_in, count)
        baseline_seconds = minimal_filer(baseline_in, root / "baseline-out")
    return {"mospool": count / worker_seconds, "baseline": count / baseline_seconds}


def bench_media(count: int, parallel: int) -> dict[str, float]:
    """The worker with `parallel` downloads in all against a urllib3 PoolManager with `parallel` connections,
    each in its own process (start-up included), the origin in this one."""
    with tempfile.TemporaryDirectory() as tmp, MediaOrigin(Path(tmp) / "tls", count) as origin:
        root = Path(tmp)
        spool = root / "spool"
        (spool / "incoming").mkdir(parents=True)
        fill_incoming(spool / "incoming", count, origin.base_url)
        config = write_config(root, spool, concurrency=parallel, parallel_downloads=parallel)
        worker_seconds = run_once(config, env={"SSL_CERT_FILE": str(origin.ca)})  # trust the origin's CA
        worker_connections = origin.take_connections()
        baseline = [sys.executable, "-m", "bench.pooled_client", origin.base_url, str(count), str(parallel)]
        started = time.perf_counter()
        subprocess.run([*baseline, str(origin.ca)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        baseline_seconds = time.perf_counter() - started
        baseline_connections = origin.take_connections()
    return {
        "mospool": count / worker_seconds,
        "baseline": count / baseline_seconds,
        "mospool_connections": worker_connections,
        "baseline_connections": baseline_connections,
    }


def bench_scale(count: int) -> dict[str, float]:
    """Time to the first record and peak RSS of the daemon with ``count`` postbacks waiting."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spool = root / "spool"
        (spool / "incoming").mkdir(parents=True)
        fill_incoming(spool / "incoming", count)
        config = write_config(root, spool)
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "spool_worker.py", "--config", str(config)], cwd=REPO)
        first = wait_for_first_record(spool / "processed", proc)
        first_seconds = time.perf_counter() - started
        peak = peak_rss_mb(proc.pid, spool / "incoming", seconds=20)
        proc.terminate()
        proc.wait(60)
    return {"first_record_seconds": first_seconds if first else float("nan"), "peak_rss_mb": peak}


def wait_for_first_record(processed: Path, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if processed.is_dir() and any(day.is_dir() and any(day.iterdir()) for day in processed.iterdir()):
            return True
        time.sleep(0.005)
    return False


def peak_rss_mb(pid: int, incoming: Path, seconds: float) -> float:
    """VmHWM (the kernel's own peak RSS) after letting the worker chew through the backlog a while."""
    time.sleep(seconds)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
