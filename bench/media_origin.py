"""The media benchmark's origin, played the way Sinch's content servers look from afar: tests/origin.py's Origin.

HTTPS (a certificate for 127.0.0.1 from a throwaway CA, so clients verify it), keep-alive, and 100 ms added to
every request, as a server across the internet would. /<n>/photo.jpg (32 KiB) and /<n>/note.txt for each of the
run's postbacks, with deterministic bytes. The TCP connections it accepts are counted, so a run can show both
clients used as many.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from tests.origin import Origin, Reply, issue_certificates, server_tls

PHOTO = bytes(range(256)) * 128
LATENCY_SECONDS = 0.1


class MediaOrigin:
    def __init__(self, folder: Path, count: int) -> None:
        """Serves the two parts of postbacks 0 to count - 1 (bench.worker_bench.postback_body names them)."""
        self.ca = issue_certificates(folder, "127.0.0.1")
        self.origin = Origin(server_tls(folder, "127.0.0.1"), latency_seconds=LATENCY_SECONDS)
        self.base_url = self.origin.url("")
        for n in range(count):
            self.origin.serve(f"/{n}/photo.jpg", Reply(body=PHOTO, content_type="image/jpeg"))
            note = f"note for /{n}/note.txt".encode()
            self.origin.serve(f"/{n}/note.txt", Reply(body=note, content_type="text/plain; charset=utf-8"))
        self._counted = 0

    def take_connections(self) -> int:
        """TCP connections accepted since the last call."""
        total = self.origin.connections
        count, self._counted = total - self._counted, total
        return count

    def __enter__(self) -> MediaOrigin:
        self.origin.__enter__()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.origin.__exit__(*exc)
