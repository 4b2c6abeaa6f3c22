"""The spool's pages for a checkout (``scripts/run-local``), served as the shipped browse site serves them.

This module (``--spool DIR --port 8025``; scripts/run-local runs it) serves with the shipped nginx site,
``deploy/nginx/mo-spool-browse.conf``, with its port and spool rendered into a folder of its own, when nginx
is installed; otherwise a small Python server that reads its rules from the same file: the same headers on
every answer (the Content-Security-Policy whose ``sandbox`` keeps any script from running, even a postback's
own XHTML body, and ``nosniff``), the same types, GET and HEAD only, and nothing reachable but the front page
and the record folders (everything else, the index and the outbox included, answers 404). Either way it
listens on 127.0.0.1 only.

Opening the spool as ``file://`` pages instead would give none of this: no CSP, no sandbox, so a body.xml
that is XHTML with a script would run it, with the right to read the other files of the spool.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from mospool.store import FILED_STATES
from mospool.store.layout import PAGE

SITE = Path(__file__).resolve().parents[3] / "deploy" / "nginx" / "mo-spool-browse.conf"
CHARSET_TYPES = ("text/html", "text/plain", "application/json", "application/xml")  # nginx: charset_types
REACHABLE = tuple(str(state) for state in FILED_STATES)
WELCOME = "<!doctype html><title>mo-spool</title><h1>mo-spool</h1><p>No front page yet.</p>"


@dataclass(frozen=True)
class SiteRules:
    """What the shipped nginx site says: its headers and its types by extension."""

    headers: dict[str, str]
    types: dict[str, str]
    default_type: str


def read_rules(site: Path = SITE) -> SiteRules:
    text = site.read_text()
    headers = {
        name: value.strip('"')
        for name, value in re.findall(r"^\s*add_header\s+(\S+)\s+(\"[^\"]*\"|\S+)\s+always;", text, re.M)
    }
    block = re.search(r"^\s*types\s*\{(.*?)\}", text, re.M | re.S)
    types: dict[str, str] = {}
    for line in (block.group(1) if block else "").split(";"):
        words = line.split()
        types.update((extension, words[0]) for extension in words[1:])
    default = re.search(r"^\s*default_type\s+(\S+);", text, re.M)
    if "sandbox" not in headers.get("Content-Security-Policy", "") or not types or default is None:
        raise ValueError(f"{site}: no sandboxing Content-Security-Policy, types or default_type found")
    return SiteRules(headers, types, default.group(1))


# --- nginx, when it is installed


def render_nginx(folder: Path, spool: Path, port: int, site: Path = SITE) -> Path:
    """The shipped site on 127.0.0.1:port over ``spool``, with its main config, pid and logs in ``folder``."""
    text = site.read_text()
    for old, new in {
        "listen 127.0.0.1:8025;": f"listen 127.0.0.1:{port};",
        "root /var/lib/mo-spool/spool;": f"root {spool};",
        "access_log /var/log/nginx/mo-spool-browse.access.log;": "access_log off;",
    }.items():
        if old not in text:
            raise ValueError(f"{site} no longer holds {old!r}: update mospool/outputs/pages/serve.py")
        text = text.replace(old, new)
    (folder / "site.conf").write_text(text)
    user = "user root;\n" if os.geteuid() == 0 else ""  # as root, the workers must still read 0640 files
    temps = "".join(
        f"  {kind}_temp_path {folder}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = folder / "nginx.conf"
    main.write_text(
        f"{user}worker_processes 1;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log;\n"
        f"events {{ worker_connections 64; }}\nhttp {{\n{temps}  include {folder}/site.conf;\n}}\n"
    )
    return main


def run_nginx(spool: Path, port: int) -> int:
    folder = Path(tempfile.mkdtemp(prefix="mospool-pages-"))
    try:
        main = render_nginx(folder, spool, port)
        nginx = subprocess.Popen([_nginx(), "-c", str(main), "-g", "daemon off;"])

        def stop(signum: int, frame: FrameType | None) -> None:
            nginx.terminate()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
        return nginx.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _nginx() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        raise FileNotFoundError("nginx")
    return found


# --- the same rules in Python, when it is not


class PagesServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, spool: Path, port: int, rules: SiteRules) -> None:
        self.spool = spool.resolve()
        self.rules = rules
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: PagesServer
    server_version = "mo-spool-pages"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _refuse(self) -> None:
        reachable = self._target() is not None
        self._send(HTTPStatus.FORBIDDEN if reachable else HTTPStatus.NOT_FOUND, b"", "text/plain", True)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _target(self) -> Path | None:
        """The file or folder a path names, if the browse site lets it be reached."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        segments = [segment for segment in path.split("/") if segment]
        if any(segment in (".", "..") for segment in segments) or "\0" in path:
            return None
        if segments and segments[0] not in REACHABLE and segments != [PAGE]:
            return None
        target = self.server.spool.joinpath(*segments).resolve()
        if target != self.server.spool and self.server.spool not in target.parents:
            return None
        return target

    def _answer(self, body: bool) -> None:
        target = self._target()
        if target == self.server.spool:
            front = target / PAGE
            if front.is_file():
                return self._file(front, body)
            return self._send(HTTPStatus.OK, WELCOME.encode(), "text/html", body)
        if target is None or not target.exists():
            return self._send(HTTPStatus.NOT_FOUND, b"404 Not Found\n", "text/plain", body)
        if target.is_dir():
            path = urllib.parse.urlsplit(self.path).path
            if not path.endswith("/"):  # as nginx does: to the folder, by an absolute URL
                host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
                return self._redirect(f"http://{host}{path}/")
            page = target / PAGE
            return self._file(page, body) if page.is_file() else self._listing(target, body)
        return self._file(target, body)

    def _file(self, path: Path, body: bool) -> None:
        extension = path.suffix.lstrip(".").lower()
        self._send(HTTPStatus.OK, path.read_bytes(), self.server.rules.types.get(extension), body)

    def _listing(self, folder: Path, body: bool) -> None:
        names = sorted(f"{entry.name}/" if entry.is_dir() else entry.name for entry in folder.iterdir())
        items = "".join(
            f'<li><a href="{urllib.parse.quote(name)}">{html.escape(name)}</a></li>' for name in names
        )
        page = f"<!doctype html><title>{html.escape(folder.name)}</title><ul>{items}</ul>"
        self._send(HTTPStatus.OK, page.encode(), "text/html", body)

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        self.send_header("Location", location)
        self._headers(0, "text/plain")

    def _send(self, status: HTTPStatus, data: bytes, media_type: str | None, body: bool) -> None:
        self.send_response(status)
        self._headers(len(data), media_type or self.server.rules.default_type)
        if body:
            self.wfile.write(data)

    def _headers(self, length: int, media_type: str) -> None:
        charset = "; charset=utf-8" if media_type in CHARSET_TYPES else ""
        self.send_header("Content-Type", media_type + charset)
        self.send_header("Content-Length", str(length))
        for name, value in self.server.rules.headers.items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def run_python(spool: Path, port: int) -> int:
    server = PagesServer(spool, port, read_rules())
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        server.serve_forever(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the spool's pages as the shipped browse site does.")
    parser.add_argument("--spool", required=True, type=Path)
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--python", action="store_true", help="the Python server even when nginx is there")
    args = parser.parse_args(argv)
    try:
        if not args.python:
            _nginx()
            print("mo-spool: pages served by nginx with the shipped browse site", file=sys.stderr)
            return run_nginx(args.spool, args.port)
    except FileNotFoundError:
        pass
    print("mo-spool: pages served by Python with the browse site's rules (nginx not found)", file=sys.stderr)
    return run_python(args.spool, args.port)


if __name__ == "__main__":
    sys.exit(main())
