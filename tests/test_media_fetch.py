"""Media downloads against a real local HTTP(S) origin: names, types, caps, deadlines, the SSRF rules, and
kept-alive, pinned, verified connections."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mospool import media
from mospool.config import MediaSettings
from mospool.media import Fetcher, MediaError, MediaFile, extension_for, safe_stem
from tests.origin import Origin, Reply, issue_certificates, server_tls

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
LOCAL = MediaSettings(
    allow_private_networks=True, timeout_seconds=5, connect_timeout_seconds=2, max_bytes=100_000
)


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    path = tmp_path / "record" / "media"
    path.mkdir(parents=True)
    return path


def fetch_one(url: str, index: int, media_dir: Path, settings: MediaSettings) -> MediaFile:
    with Fetcher(settings) as fetcher:
        return fetcher.fetch_one(url, index, media_dir)


def fetch_all(urls: Sequence[str], record_dir: Path, settings: MediaSettings) -> list[MediaFile | MediaError]:
    with Fetcher(settings) as fetcher:
        return fetcher.fetch_all(urls, record_dir)


def fetched(results: list[MediaFile | MediaError]) -> list[MediaFile]:
    assert all(isinstance(result, MediaFile) for result in results), results
    return [result for result in results if isinstance(result, MediaFile)]


def test_jpeg_and_text_parts(origin: Origin, tmp_path: Path) -> None:
    urls = [
        origin.serve("/mo/abc/photo.jpeg", Reply(body=JPEG, content_type="image/jpeg")),
        origin.serve(
            "/mo/abc/note.txt", Reply(body="héllo ✓".encode(), content_type="text/plain; charset=utf-8")
        ),
    ]
    photo, note = fetched(fetch_all(urls, tmp_path, LOCAL))
    assert photo.file == "media/01-photo.jpg"
    assert (tmp_path / photo.file).read_bytes() == JPEG
    assert (photo.bytes, photo.sha256) == (len(JPEG), hashlib.sha256(JPEG).hexdigest())
    assert photo.text is None
    assert note.file == "media/02-note.txt"
    assert note.text == "héllo ✓"
    assert photo.to_json() == {
        "url": urls[0], "file": "media/01-photo.jpg", "content_type": "image/jpeg",
        "bytes": len(JPEG), "sha256": hashlib.sha256(JPEG).hexdigest(),
    }  # fmt: skip


def test_latin1_text_uses_the_declared_charset(origin: Origin, media_dir: Path) -> None:
    url = origin.serve(
        "/t", Reply(body="café".encode("latin-1"), content_type="text/plain; charset=ISO-8859-1")
    )
    assert fetch_one(url, 1, media_dir, LOCAL).text == "café"


@pytest.mark.parametrize(
    ("path", "content_type", "expected"),
    [
        ("/noext", "image/png", "01-noext.png"),
        ("/pic.jpg", "application/octet-stream", "01-pic.jpg"),
        ("/clip", "video/3gpp", "01-clip.3gp"),
        ("/mystery", "application/x-unknown", "01-mystery.bin"),
        ("/card.vcf", None, "01-card.vcf"),
        ("/slides.smil", "application/smil", "01-slides.smil"),
    ],
)
def test_extension_from_content_type_then_url(
    origin: Origin, media_dir: Path, path: str, content_type: str | None, expected: str
) -> None:
    url = origin.serve(path, Reply(body=b"data", content_type=content_type))
    part = fetch_one(url, 1, media_dir, LOCAL)
    assert part.file == f"media/{expected}"
    assert part.text is None


@pytest.mark.parametrize(
    ("reply", "permanent", "retry_after"),
    [
        (Reply(404), True, None),
        (Reply(403), True, None),
        (Reply(410), True, None),
        (Reply(503), False, None),
        (Reply(500), False, None),
        (Reply(408), False, None),
        (Reply(429, headers={"Retry-After": "7"}), False, 7.0),
    ],
)
def test_status_codes(
    origin: Origin, media_dir: Path, reply: Reply, permanent: bool, retry_after: float | None
) -> None:
    with pytest.raises(MediaError) as caught:
        fetch_one(origin.serve("/x.jpg", reply), 1, media_dir, LOCAL)
    assert caught.value.permanent is permanent
    assert caught.value.retry_after == retry_after
    assert f"HTTP {reply.status}" in str(caught.value)
    assert list(media_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("reply", "permanent", "message"),
    [
        (Reply(body=b"x" * 200_000), True, "max_bytes"),  # honest length, over the cap
        (Reply(body=b"x" * 10, content_length=10**9), True, "max_bytes"),  # claims too much
        (Reply(body=b"x" * 100, content_length=5000), False, "interrupted"),  # sends less than it claims
    ],
)
def test_size_limits_leave_no_file(
    origin: Origin, media_dir: Path, reply: Reply, permanent: bool, message: str
) -> None:
    with pytest.raises(MediaError, match=message) as caught:
        fetch_one(origin.serve("/big.jpg", reply), 1, media_dir, LOCAL)
    assert caught.value.permanent is permanent
    assert list(media_dir.iterdir()) == []


def test_cap_is_counted_on_bytes_read_not_on_content_length(origin: Origin, media_dir: Path) -> None:
    small = MediaSettings(allow_private_networks=True, max_bytes=1000)
    url = origin.serve("/stream.bin", Reply(body=b"y" * 5000, content_length=-1))
    with pytest.raises(MediaError, match="max_bytes"):
        fetch_one(url, 1, media_dir, small)
    assert list(media_dir.iterdir()) == []


@pytest.mark.parametrize(
    "reply", [Reply(body=b"late", stall_seconds=3), Reply(body=b"slowly, byte by byte", trickle_seconds=0.2)]
)
def test_the_deadline_holds_for_stalls_and_trickles(origin: Origin, media_dir: Path, reply: Reply) -> None:
    quick = MediaSettings(allow_private_networks=True, timeout_seconds=1.0, connect_timeout_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(MediaError) as caught:
        fetch_one(origin.serve("/slow.jpg", reply), 1, media_dir, quick)
    assert time.monotonic() - started < 2.0
    assert caught.value.permanent is False
    assert list(media_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/", "non-public address 169.254.169.254"),
        ("http://127.0.0.1:{port}/x.jpg", "non-public address 127.0.0.1"),
        ("http://localhost:{port}/x.jpg", "non-public address"),
        ("http://[::1]:{port}/x.jpg", "non-public address ::1"),
        ("http://[::ffff:127.0.0.1]:{port}/x.jpg", "non-public address"),
        ("http://10.1.2.3/x.jpg", "non-public address 10.1.2.3"),
        ("http://0.0.0.0:{port}/x.jpg", "non-public address 0.0.0.0"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://example.com/x", "scheme 'ftp'"),
        ("gopher://example.com/x", "scheme 'gopher'"),
        ("http://user:pw@127.0.0.1:{port}/x.jpg", "credentials"),
    ],
)
def test_refused_urls_never_connect(origin: Origin, media_dir: Path, url: str, rule: str) -> None:
    origin.serve("/x.jpg", Reply(body=b"secret"))
    with pytest.raises(MediaError, match=f"refused: .*{rule}") as caught:
        fetch_one(url.format(port=origin.port), 1, media_dir, MediaSettings())
    assert caught.value.permanent is True
    assert origin.requests == []
    assert list(media_dir.iterdir()) == []


def test_host_allowlist(origin: Origin, media_dir: Path) -> None:
    url = origin.serve("/x.jpg", Reply(body=b"ok"))
    allowed = MediaSettings(allow_private_networks=True, allowed_hosts=("*.example.com", "127.0.0.1"))
    assert fetch_one(url, 1, media_dir, allowed).bytes == 2
    other = MediaSettings(allow_private_networks=True, allowed_hosts=("*.sinch.com", "mms.example.net"))
    with pytest.raises(MediaError, match="not in allowed_hosts"):
        fetch_one(url, 2, media_dir, other)
    assert origin.requests == ["/x.jpg"]


def test_every_redirect_hop_is_checked_again(origin: Origin, media_dir: Path) -> None:
    settings = MediaSettings(allow_private_networks=True, allowed_hosts=("127.0.0.1",))
    secret = f"http://localhost:{origin.port}/secret"
    origin.serve("/secret", Reply(body=b"internal"))
    start = origin.serve("/start.jpg", Reply(302, headers={"Location": secret}))
    with pytest.raises(MediaError, match="refused: host localhost is not in allowed_hosts"):
        fetch_one(start, 1, media_dir, settings)
    to_file = origin.serve("/to-file.jpg", Reply(302, headers={"Location": "file:///etc/passwd"}))
    with pytest.raises(MediaError, match="refused: scheme 'file'"):
        fetch_one(to_file, 1, media_dir, settings)
    assert origin.seen("/secret") == 0


def test_redirects_are_followed_up_to_the_limit(origin: Origin, media_dir: Path) -> None:
    origin.serve("/final.png", Reply(body=b"png", content_type="image/png"))
    origin.serve("/hop2", Reply(301, headers={"Location": "/final.png"}))
    url = origin.serve("/hop1.png", Reply(307, headers={"Location": origin.url("/hop2")}))
    part = fetch_one(url, 1, media_dir, LOCAL)
    assert (part.file, part.url) == ("media/01-hop1.png", url)
    loop = origin.serve("/loop", Reply(302, headers={"Location": "/loop"}))
    with pytest.raises(MediaError, match="max_redirects"):
        fetch_one(loop, 2, media_dir, LOCAL)
    assert origin.seen("/loop") == LOCAL.max_redirects + 1


@pytest.mark.parametrize(
    "path",
    [
        "/a/..%2F..%2Fetc%2Fpasswd",
        "/%2e%2e/%2e%2e/x",
        "/x%00.jpg",
        "/ünï/cødé.png",
        "/..",
        "/dir/.hidden",
        "/",
    ],
)
def test_hostile_paths_land_inside_media(origin: Origin, media_dir: Path, path: str) -> None:
    url = origin.serve(path, Reply(body=b"data", content_type="image/png"))
    part = fetch_one(url, 1, media_dir, LOCAL)
    saved = (media_dir.parent / part.file).resolve()
    assert saved.parent == media_dir.resolve()
    assert not saved.name.startswith(".") and "/" not in saved.name[3:]
    assert saved.read_bytes() == b"data"


def test_fetch_all_keeps_order_and_reuses_complete_parts(origin: Origin, tmp_path: Path) -> None:
    urls = [
        origin.serve(f"/p{n}.jpg", Reply(body=bytes([n]) * 100, content_type="image/jpeg")) for n in range(6)
    ]
    first = fetched(fetch_all(urls, tmp_path, LOCAL))
    assert [part.index for part in first] == [1, 2, 3, 4, 5, 6]
    (tmp_path / "media" / ".07.part").write_bytes(b"half")  # a crash leftover is not a complete part
    again = fetched(fetch_all(urls, tmp_path, LOCAL))
    assert again == first
    assert all(origin.seen(f"/p{n}.jpg") == 1 for n in range(6))


def test_fetch_all_reports_each_part(origin: Origin, tmp_path: Path) -> None:
    urls = [origin.serve("/ok.jpg", Reply(body=b"ok", content_type="image/jpeg")), origin.url("/missing.jpg")]
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / ".02.part").write_bytes(b"half of a part that is gone now")  # a crash leftover
    ok, missing = fetch_all(urls, tmp_path, LOCAL)
    assert isinstance(ok, MediaFile)
    assert isinstance(missing, MediaError) and missing.permanent and missing.url == urls[1]
    assert [p.name for p in (tmp_path / "media").iterdir()] == ["01-ok.jpg"]  # no half file goes to failed/


@pytest.mark.parametrize(
    ("url", "stem"),
    [
        ("https://my.mmsmsg.com/mmsmo/abc123/123wqe.jpeg", "123wqe"),
        ("http://h/a%2Fb%2F..%2Fc.png", "a_b_.._c"),
        ("http://h/...", "part"),
        ("http://h/" + "x" * 200 + ".jpg", "x" * 60),
    ],
)
def test_safe_stem(url: str, stem: str) -> None:
    assert safe_stem(url) == stem


def test_extension_for() -> None:
    assert extension_for("IMAGE/JPEG; q=1", "http://h/x") == "jpg"
    assert extension_for(None, "http://h/x.JPEG") == "jpg"
    assert extension_for("application/octet-stream", "http://h/x.exe") == "bin"


# --- IPv6 addresses that carry an IPv4 address are judged by that IPv4


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("2002:7f00:1::", "127.0.0.1"),  # 6to4
        ("2002:a01:203::1", "10.1.2.3"),
        ("::127.0.0.1", "127.0.0.1"),  # IPv4-compatible
        ("::ffff:10.0.0.1", "10.0.0.1"),  # IPv4-mapped
        ("2001:0:7f00:1::f7f7:f7f7", "127.0.0.1"),  # Teredo: the server is loopback (the client is 8.8.8.8)
        ("2001:0:808:808::f5ff:fffe", "10.0.0.1"),  # Teredo: the client, inverted, is private
    ],
)
def test_embedded_ipv4_forms_are_refused(origin: Origin, media_dir: Path, address: str, carried: str) -> None:
    origin.serve("/x.jpg", Reply(body=b"secret"))
    url = f"http://[{address}]:{origin.port}/x.jpg"
    with pytest.raises(MediaError, match=rf"refused: .*carries IPv4 {carried}\b") as caught:
        fetch_one(url, 1, media_dir, MediaSettings())
    assert caught.value.permanent is True
    assert ipaddress.IPv4Address(carried) in media.embedded_ipv4(ipaddress.IPv6Address(address))
    assert origin.requests == []
    assert list(media_dir.iterdir()) == []


def test_local_use_nat64_carries_an_ipv4_and_is_refused_as_local_use(origin: Origin, media_dir: Path) -> None:
    url = f"http://[64:ff9b:1::7f00:1]:{origin.port}/x.jpg"  # the usual /96 layout inside the /48
    assert media.embedded_ipv4(ipaddress.IPv6Address("64:ff9b:1::7f00:1")) == [
        ipaddress.IPv4Address("127.0.0.1")
    ]
    with pytest.raises(MediaError, match=r"refused: .*in 64:ff9b:1::/48, IPv4-IPv6 Translation, local use"):
        fetch_one(url, 1, media_dir, MediaSettings())
    assert origin.requests == []


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("64:ff9b::808:808", ["8.8.8.8"]),
        ("2002:808:404::", ["8.8.4.4"]),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", ["65.54.227.120", "192.0.2.45"]),  # RFC 4380's example
        ("2a00:1450:4001:82b::200e", []),  # a plain global IPv6
    ],
)
def test_the_ipv4_each_form_carries(address: str, carried: list[str]) -> None:
    assert media.embedded_ipv4(ipaddress.IPv6Address(address)) == [ipaddress.IPv4Address(a) for a in carried]


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::808:808",
        "2002:808:404::",
        "2001:0:808:808::f7f7:fbfb",
        "::ffff:8.8.8.8",
        "2a00:1450:4001:82b::200e",
    ],
)
def test_a_public_ipv4_inside_passes_the_check(address: str) -> None:
    target = media.check_url(
        f"http://[{address}]/x.jpg", MediaSettings()
    )  # an IP literal: no DNS, no connect
    assert target.address == address


def test_local_use_nat64_is_refused_whatever_it_carries(origin: Origin, media_dir: Path) -> None:
    url = f"http://[64:ff9b:1::808:808]:{origin.port}/x.jpg"  # 8.8.8.8 through someone's own NAT64
    with pytest.raises(MediaError, match=r"refused: .*non-public address 64:ff9b:1::808:808 "):
        fetch_one(url, 1, media_dir, MediaSettings())
    assert origin.requests == []


# --- connections: kept alive, shared by every postback, pinned to the checked address, TLS verified


def pinned_resolver(name: str, calls: list[str]) -> media.Resolver:
    """`name` (a .test name: never resolvable for real) resolves to 127.0.0.1 here; every lookup is logged."""

    def resolve(host: str, port: int) -> Sequence[tuple[Any, ...]]:
        calls.append(host)
        assert host == name
        return socket.getaddrinfo("127.0.0.1", port, type=socket.SOCK_STREAM)

    return resolve


def test_connections_are_kept_alive_and_shared_across_postbacks(origin: Origin, tmp_path: Path) -> None:
    settings = MediaSettings(allow_private_networks=True, parallel_downloads=2, timeout_seconds=10)
    urls = [
        origin.serve(f"/p{n}.jpg", Reply(body=bytes([n]) * 5000, content_type="image/jpeg")) for n in range(4)
    ]
    with Fetcher(settings) as fetcher:
        postbacks = [tmp_path / f"postback{n}" for n in range(3)]
        for folder in postbacks:
            folder.mkdir()
        threads = [threading.Thread(target=fetcher.fetch_all, args=(urls, folder)) for folder in postbacks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(
        sorted(p.name for p in (folder / "media").iterdir()) == [f"0{n}-p{n - 1}.jpg" for n in range(1, 5)]
        for folder in postbacks
    )
    assert len(origin.requests) == 12
    assert origin.connections <= 2  # parallel_downloads is the worker's total, not per postback
    assert origin.most_at_once <= 2


def test_downloads_of_different_postbacks_overlap(origin: Origin, tmp_path: Path) -> None:
    meet = threading.Barrier(2, timeout=10)
    first = origin.serve("/first.jpg", Reply(body=b"1", rendezvous=meet))
    second = origin.serve("/second.jpg", Reply(body=b"2", rendezvous=meet))
    with Fetcher(MediaSettings(allow_private_networks=True, parallel_downloads=2)) as fetcher:
        results: dict[str, list[MediaFile | MediaError]] = {}

        def postback(name: str, url: str) -> None:
            (tmp_path / name).mkdir()
            results[name] = fetcher.fetch_all([url], tmp_path / name)

        threads = [threading.Thread(target=postback, args=args) for args in (("a", first), ("b", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    sizes = [part.bytes for part in fetched(results["a"] + results["b"])]
    assert sizes == [1, 1]  # each request waited for the other at the origin: they were in flight together
    assert origin.most_at_once == 2


def test_the_connection_goes_to_the_checked_address(origin: Origin, media_dir: Path) -> None:
    calls: list[str] = []
    url = origin.serve("/x.jpg", Reply(body=b"pinned"), host="media.test")  # .test never resolves for real
    with Fetcher(LOCAL, resolve=pinned_resolver("media.test", calls)) as fetcher:
        assert fetcher.fetch_one(url, 1, media_dir).bytes == 6
    assert calls == ["media.test"]
    assert origin.hosts == [f"media.test:{origin.port}"]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    issue_certificates(folder, "media.test", "other.test")
    return folder


def test_https_is_verified_against_the_host_name_and_kept_alive(
    certificates: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "ca.pem"))  # our CA, for the default context
    lookups: list[str] = []
    one_at_a_time = MediaSettings(allow_private_networks=True, parallel_downloads=1, timeout_seconds=10)
    with (
        Origin(server_tls(certificates, "media.test")) as origin,
        Fetcher(one_at_a_time, resolve=pinned_resolver("media.test", lookups)) as fetcher,
    ):
        urls = [
            origin.serve(f"/p{n}.jpg", Reply(body=JPEG, content_type="image/jpeg"), host="media.test")
            for n in range(5)
        ]
        parts = fetched(fetcher.fetch_all(urls, media_dir.parent))
    assert [part.sha256 for part in parts] == [hashlib.sha256(JPEG).hexdigest()] * 5
    assert len(lookups) == 5  # each part checked once, connected to what the check found
    assert origin.connections == 1  # one TCP connection, one TLS handshake, five requests
    assert origin.sni == ["media.test"]  # SNI is the host name, though the socket went to 127.0.0.1
    assert origin.hosts == [f"media.test:{origin.port}"] * 5


@pytest.mark.parametrize(
    ("presented", "trusted", "reason"),
    [
        ("other.test", True, "Hostname mismatch"),
        ("media.test", False, "unable to get local issuer certificate"),
    ],
    ids=["certificate for another name", "unknown CA"],
)
def test_https_refuses_a_certificate_that_does_not_prove_the_host(
    certificates: Path,
    media_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    presented: str,
    trusted: bool,
    reason: str,
) -> None:
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "ca.pem"))
    with (
        Origin(server_tls(certificates, presented)) as origin,
        Fetcher(LOCAL, resolve=pinned_resolver("media.test", [])) as fetcher,
    ):
        url = origin.serve("/x.jpg", Reply(body=b"secret"), host="media.test")
        with pytest.raises(MediaError, match=f"CERTIFICATE_VERIFY_FAILED.*{reason}") as caught:
            fetcher.fetch_one(url, 1, media_dir)
        assert origin.requests == []
    assert caught.value.permanent is False
    assert list(media_dir.iterdir()) == []


def test_close_drops_queued_parts_as_transient_and_lets_the_running_one_finish(
    origin: Origin, tmp_path: Path
) -> None:
    release = threading.Barrier(2, timeout=10)
    running = origin.serve("/running.jpg", Reply(body=b"done", rendezvous=release))
    queued = origin.serve("/queued.jpg", Reply(body=b"never asked for"))
    fetcher = Fetcher(MediaSettings(allow_private_networks=True, parallel_downloads=1))
    results: list[MediaFile | MediaError] = []
    postback = threading.Thread(target=lambda: results.extend(fetcher.fetch_all([running, queued], tmp_path)))
    postback.start()
    deadline = time.monotonic() + 10
    while origin.seen("/running.jpg") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    fetcher.close()  # the one download thread is busy with /running.jpg: /queued.jpg is still queued
    release.wait()
    postback.join()
    done, dropped = results
    assert isinstance(done, MediaFile) and done.bytes == 4
    assert isinstance(dropped, MediaError) and not dropped.permanent and "stopping" in str(dropped)
    assert origin.seen("/queued.jpg") == 0
    (tmp_path / "later").mkdir()
    after = fetcher.fetch_all([queued], tmp_path / "later")
    assert [str(error) for error in after] == ["not fetched: the worker was stopping"]
