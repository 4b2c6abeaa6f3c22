"""`python -m bench`: every benchmark, printed as one table of figures measured side by side in this run."""

from __future__ import annotations

import argparse
import os
import platform

from bench import forward_bench, index_bench, neighbour_bench, pages_bench, receiver_bench, worker_bench
from bench.filesystem import fresh_ext4

PARTS = ("receiver", "worker", "media", "webhooks", "scale", "pages", "neighbour", "index")
Row = tuple[str, float, float, float | None, str]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter runs (a smoke test)")
    parser.add_argument(
        "--only", action="append", choices=PARTS, help="run only this part (repeatable; default: all)"
    )
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}"
    )
    print(f"load average at the start: {load_average()}")
    with fresh_ext4() as where:
        print(f"spools on: {where}")
        run(scale, args.quick, args.only or PARTS)
    print(f"load average at the end: {load_average()}")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: a shared machine's figures say how busy it was."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run(scale: int, quick: bool, parts: tuple[str, ...] | list[str]) -> None:
    rows: list[Row] = []
    if "receiver" in parts:
        rows += receiver_rows(quick)
    if "worker" in parts:
        plain = worker_bench.bench_no_media(10_000 // scale)
        rows.append(
            (
                f"worker --once, {10_000 // scale} without media: postbacks/s",
                plain["mospool"],
                plain["baseline"],
                None,
                ">= 1.5 x minimal durable filer",
            )
        )
    if "media" in parts:
        rows.append(media_row(2_000 // scale, parallel=8))
    if "webhooks" in parts:
        rows.append(webhooks_row(2_000 // scale, rounds=3 if quick else 5))
    print_table(rows)
    if "scale" in parts:
        scale_run = worker_bench.bench_scale(100_000 // scale)
        print()
        print(
            f"worker with {100_000 // scale} waiting: first record after {scale_run['first_record_seconds']:.2f} s"
            f" (target < 1 s), peak RSS {scale_run['peak_rss_mb']:.0f} MB (target < 100 MB)"
        )
    if "pages" in parts:
        run_pages(scale)
    if "neighbour" in parts:
        run_neighbour(3_000 // scale)
    if "index" in parts:
        run_index(10_000 // scale, rounds=1 if scale > 1 else 2)


def run_neighbour(count: int) -> None:
    result = neighbour_bench.measure(count)
    print()
    for side, what in (
        ("alone", "alone"),
        ("shared", f"with a neighbour writing {neighbour_bench.NEIGHBOUR_MB} MB files"),
    ):
        worker, filer = result[f"worker_{side}"], result[f"filer_{side}"]
        print(
            f"worker --once vs minimal filer, {count} postbacks on a fresh ext4, {what}: worker {worker:.0f}/s,"
            f" filer {filer:.0f}/s, ratio {worker / filer:.2f}"
            + (" (target >= 1.0)" if side == "shared" else "")
        )


def run_index(count: int, rounds: int) -> None:
    found = index_bench.bench_index(count, rounds)
    shared, alone = found["postgresql"], found["sqlite"]
    print()
    print(
        f"worker --once, {count} without media: {shared:.1f} postbacks/s with the index in PostgreSQL,"
        f" {alone:.1f} with SQLite in the spool: ratio {shared / alone:.2f} (target >= 0.8)"
    )
    print(
        f"claim latency, {count} claims from 16 threads: PostgreSQL p50 {found['postgresql_claim_p50_ms']:.2f} ms,"
        f" p99 {found['postgresql_claim_p99_ms']:.2f} ms; SQLite p50 {found['sqlite_claim_p50_ms']:.3f} ms,"
        f" p99 {found['sqlite_claim_p99_ms']:.3f} ms"
    )


def run_pages(scale: int) -> None:
    day, count = 20_000 // scale, 2_000 // scale
    result = pages_bench.measure(day, count, rounds=1 if scale > 1 else 3)
    on, off, sizes = result["pages_on"], result["pages_off"], result["sizes"]
    catch_up = result["catch_up_seconds"]
    assert isinstance(on, float) and isinstance(off, float) and isinstance(sizes, dict)
    assert isinstance(catch_up, float)
    print()
    print(
        f"worker daemon, {count} more into a day of {day}: {on:.1f} postbacks/s with pages, {off:.1f} without:"
        f" ratio {on / off:.2f} (target >= 0.95)"
    )
    print(f"pages turned on again over that day: start-up and the day's pages rewritten in {catch_up:.1f} s")
    print("largest pages (bytes): " + ", ".join(f"{name} {size:,}" for name, size in sizes.items()))


def receiver_rows(quick: bool) -> list[Row]:
    receiver = receiver_bench.measure(rounds=1 if quick else 5, seconds=2 if quick else 5)
    mine, hello, durable = receiver["mo-spool"], receiver["hello (a)"], receiver["durable (b)"]
    return [
        (
            "receiver, 1 conn: p50 latency (ms)",
            mine["serial_p50_ms"],
            durable["serial_p50_ms"],
            hello["serial_p50_ms"],
            "<= 1.05 x (b)",
        ),
        (
            "receiver, 1 conn: p99 latency (ms)",
            mine["serial_p99_ms"],
            durable["serial_p99_ms"],
            hello["serial_p99_ms"],
            "",
        ),
        ("receiver, 1 conn: requests/s", mine["serial_rps"], durable["serial_rps"], hello["serial_rps"], ""),
        (
            "receiver, 16 conns: requests/s",
            mine["parallel16_rps"],
            durable["parallel16_rps"],
            hello["parallel16_rps"],
            ">= 0.95 x (b)",
        ),
    ]


def media_row(count: int, parallel: int) -> Row:
    media = worker_bench.bench_media(count, parallel=parallel)
    print(
        f"media over TLS, 100 ms per request: TCP connections opened: worker {media['mospool_connections']:.0f},"
        f" baseline {media['baseline_connections']:.0f} (both at most {parallel})"
    )
    return (
        f"worker --once, {count} with 2 TLS parts: postbacks/s",
        media["mospool"],
        media["baseline"],
        None,
        ">= 0.9 x pooled client",
    )


def webhooks_row(count: int, rounds: int) -> Row:
    webhooks = forward_bench.measure(count, concurrency=4, rounds=rounds)
    print(f"webhooks: median ratio of {rounds} back-to-back pairs {webhooks['ratio']:.2f}")
    return (
        f"webhooks, {count} x 4 conns: deliveries/s",
        webhooks["mospool"],
        webhooks["baseline"],
        None,
        ">= 0.9 x plain urllib3 pool",
    )


def print_table(rows: list[Row]) -> None:
    print()
    print(
        f"| {'figure':<52} | {'mo-spool':>9} | {'baseline':>9} | {'ratio':>6} | {'hello (a)':>9} | target |"
    )
    print(f"|{'-' * 54}|{'-' * 11}|{'-' * 11}|{'-' * 8}|{'-' * 11}|--------|")
    for label, value, baseline, hello_value, target in rows:
        extra = f"{hello_value:9.2f}" if hello_value is not None else " " * 9
        print(
            f"| {label:<52} | {value:9.2f} | {baseline:9.2f} | {value / baseline:6.2f} | {extra} | {target} |"
        )


if __name__ == "__main__":
    main()
