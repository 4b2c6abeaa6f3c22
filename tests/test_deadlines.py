"""Deadlines that hold: a media part and a webhook try are cut at their deadline however the remote trickles.

Each hostile way of answering (tests/hostile.py: headers or body one byte at a time, headers or a chunked
body that never end, no answer at all) is played by a real socket server; the client must give up at its
deadline plus the reaper's slack, and close its side, which the server sees. The wall-time bound is
generous ("cut, not hung"), never a performance figure.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from mospool import deadline
from mospool.config import MediaSettings
from mospool.media import Fetcher, MediaError
from mospool.outputs.webhook_client import WebhookClient
from mospool.outputs.webhooks import ForwardSettings
from mospool.store import Entry
from tests.hostile import ENDLESS_CHUNKED_BODY, MODES, SLOW_BODY, SLOW_HEADERS, Hostile
from tests.webhook_app import SECRET

DEADLINE = 3.0
CUT_NOT_HUNG = DEADLINE + deadline.SLACK_SECONDS + 4.0  # a loaded machine is slow; a hung one is not this
pytestmark = pytest.mark.slow  # every case waits out a deadline of 3 s
INTERVALS = {SLOW_HEADERS: 2.0}  # one byte every 2 s, as the issue found; the other ways every 0.5 s


def hostile(mode: str) -> Hostile:
    return Hostile(mode, INTERVALS.get(mode, 0.5))


@pytest.mark.parametrize("mode", MODES)
def test_a_media_part_is_cut_at_its_deadline(mode: str, tmp_path: Path) -> None:
    settings = MediaSettings(allow_private_networks=True, timeout_seconds=DEADLINE, connect_timeout_seconds=2)
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    with hostile(mode) as server, Fetcher(settings) as fetcher:
        started = time.monotonic()
        with pytest.raises(MediaError) as caught:
            fetcher.fetch_one(server.url(), 1, media_dir)
        elapsed = time.monotonic() - started
        closes = server.wait_for_closes(1, timeout=5)
    assert str(caught.value) == "timed out: the part took longer than timeout_seconds (3)"
    assert caught.value.timed_out and not caught.value.permanent
    assert DEADLINE - 0.5 < elapsed < CUT_NOT_HUNG, elapsed
    assert len(closes) == 1 and closes[0] < CUT_NOT_HUNG  # the client closed its side: cut, not abandoned
    assert list(media_dir.iterdir()) == []  # nothing half written is left


def webhook_client(url: str) -> WebhookClient:
    return WebhookClient(ForwardSettings(url=url, secret=SECRET, timeout_seconds=DEADLINE, concurrency=2))


ENTRY = Entry("msg_1_001", "1", 1, "processed", b'{"hello": "application"}')


@pytest.mark.parametrize("mode", MODES)
def test_a_webhook_try_is_cut_at_its_deadline(mode: str) -> None:
    with hostile(mode) as server:
        client = webhook_client(server.url("/hooks"))
        started = time.monotonic()
        answer = client.send(ENTRY)
        elapsed = time.monotonic() - started
        closes = server.wait_for_closes(1, timeout=5)
        client.close()
    assert DEADLINE - 0.5 < elapsed < CUT_NOT_HUNG, elapsed
    assert len(closes) == 1 and closes[0] < CUT_NOT_HUNG
    if mode in (SLOW_BODY, ENDLESS_CHUNKED_BODY):  # the application said 200: delivered, the rest cut off
        assert answer.delivered and answer.detail == "HTTP 200 OK: (answer cut at timeout_seconds, 3)"
    else:
        assert not answer.delivered and answer.transient
        assert answer.detail == "timed out: no whole answer within timeout_seconds (3)"


def test_a_cut_connection_is_never_used_again(tmp_path: Path) -> None:
    """After a cut, the next request opens a new connection rather than reuse the one that was shut down."""
    with hostile(SLOW_BODY) as server:
        client = webhook_client(server.url("/hooks"))
        client.send(ENTRY)
        client.send(ENTRY)
        client.close()
    assert server.accepted == 2


def test_the_reaper_cuts_only_what_is_past_its_deadline() -> None:
    """Two operations at once: the one past its deadline is shut down, the other keeps its socket."""
    reaper = deadline.Reaper(slack_seconds=0.0)
    left, right = socket.socketpair()
    late, early = socket.socketpair()
    results: dict[str, bytes] = {}

    def read(name: str, sock: socket.socket, seconds: float) -> None:
        with reaper.watch(seconds) as limit:
            limit.attach(sock)
            results[name] = sock.recv(10)  # nothing is ever sent: only the reaper ends this

    short = threading.Thread(target=read, args=("short", left, 0.3))
    long = threading.Thread(target=read, args=("long", late, 60))
    short.start()
    long.start()
    short.join(10)
    assert results == {"short": b""}  # shut down: the blocked read returned at once
    early.sendall(b"still here")
    long.join(10)
    assert results["long"] == b"still here"
    for sock in (left, right, late, early):
        sock.close()


def test_a_finished_operation_is_not_cut_and_says_so() -> None:
    reaper = deadline.Reaper(slack_seconds=0.0)
    one, other = socket.socketpair()
    with reaper.watch(0.2) as limit:
        limit.attach(one)
        assert limit.finish() is False
    time.sleep(0.5)  # its deadline passes after it finished
    other.sendall(b"x")
    assert one.recv(1) == b"x" and limit.cut is False
    one.close()
    other.close()


def test_a_sooner_deadline_wakes_the_reaper_that_sleeps_for_a_later_one() -> None:
    """The reaper is woken only when a new deadline comes before every other: here after a long one and a
    thousand finished ones (cut all together when due), the short one is still cut near its time."""
    reaper = deadline.Reaper(slack_seconds=0.0)
    for _ in range(1000):
        with reaper.watch(0.01):
            pass
    long_sock, long_peer = socket.socketpair()
    short_sock, short_peer = socket.socketpair()
    with reaper.watch(60) as long_limit:
        long_limit.attach(long_sock)
        time.sleep(0.2)  # the reaper has cut nothing of the thousand (finished) and sleeps for the 60 s
        started = time.monotonic()
        with reaper.watch(0.3) as short_limit:
            short_limit.attach(short_sock)
            short_sock.settimeout(CUT_NOT_HUNG)  # a reaper that slept on raises TimeoutError here
            assert short_sock.recv(10) == b""  # only the reaper ends this read
        assert time.monotonic() - started < CUT_NOT_HUNG
        assert short_limit.cut and not long_limit.cut
    for sock in (long_sock, long_peer, short_sock, short_peer):
        sock.close()
