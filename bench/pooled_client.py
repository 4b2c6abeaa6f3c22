"""The media benchmark's baseline, run as its own process like the worker: a pooled plain HTTPS client.

`python -m bench.pooled_client BASE_URL COUNT PARALLEL CA_FILE` fetches the same files the worker's postbacks
name (/<n>/photo.jpg and /<n>/note.txt for n < COUNT) with PARALLEL threads sharing a urllib3 PoolManager of
PARALLEL connections, verifying the origin's certificate, and keeps nothing.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import urllib3


def fetch_everything(base_url: str, count: int, parallel: int, ca_file: str) -> int:
    urls = [f"{base_url}/{n}/{name}" for n in range(count) for name in ("photo.jpg", "note.txt")]
    client = urllib3.PoolManager(maxsize=parallel, block=True, ca_certs=ca_file, retries=False)
    with ThreadPoolExecutor(parallel) as pool:
        sizes = list(pool.map(lambda url: len(client.request("GET", url).data), urls))
    client.clear()
    return sum(sizes)


if __name__ == "__main__":
    base_url, count, parallel, ca_file = sys.argv[1:]
    print(fetch_everything(base_url, int(count), int(parallel), ca_file))
