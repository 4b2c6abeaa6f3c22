"""README's "Try it" MMS recipe, run for real, and what docs/performance.md may say about performance."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mospool.store import Spool
from tests.build import publish
from tests.servers import REPO, free_port, wait_for_http, write_config

README = (REPO / "README.md").read_text()
PERFORMANCE = (REPO / "docs" / "performance.md").read_text()


def section(title: str) -> str:
    """The text under a `## title` or `### title` heading, up to the next one (a shell `# comment` is not)."""
    match = re.search(rf"^##+ {re.escape(title)}\n(.*?)(?=^##+ |\Z)", README, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def test_try_it_warns_that_the_local_setting_must_never_reach_production() -> None:
    try_it = section("Try it")
    assert "python3 -m http.server" in try_it and "allow_private_networks = yes" in try_it
    warning = " ".join(line for line in try_it.splitlines() if line.startswith(">"))
    assert "allow_private_networks = yes" in warning and "never" in warning and "production" in warning


@pytest.mark.slow
@pytest.mark.parametrize("allow", ["yes", "no"])
def test_the_try_it_mms_is_filed_with_its_media_only_with_the_setting(
    spool: Spool, tmp_path: Path, allow: str
) -> None:
    """The README's own commands: a folder served by `python3 -m http.server`, its MMS body, the worker."""
    try_it = section("Try it")
    content = re.search(r"printf '(.*?)' > /tmp/mms/note.txt", try_it)
    body = re.search(r"<<'EOF'\n(\{\"origin\":\"MMS_MO\".*?)\nEOF", try_it, re.S)
    assert content and body
    media = tmp_path / "mms"
    media.mkdir()
    (media / "note.txt").write_text(content.group(1).replace("\\n", "\n"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=media
    )
    try:
        wait_for_http("127.0.0.1", port, "/note.txt")
        config = write_config(
            tmp_path / "config.ini", tmp_path / "spool", {"media": {"allow_private_networks": allow}}
        )
        posted = body.group(1).replace("127.0.0.1:8000", f"127.0.0.1:{port}").encode()
        publish(spool, posted)
        subprocess.run(
            [sys.executable, "spool_worker.py", "--config", str(config), "--once"], cwd=REPO, check=True
        )
    finally:
        server.terminate()
        server.wait()
    if allow == "yes":
        (message,) = spool.processed.glob("*/*/message.json")
        assert json.loads(message.read_text())["text"] == "hello from a text part\n"
    else:
        (error,) = spool.failed.glob("*/*/error.json")
        assert "allow_private_networks" in json.loads(error.read_text())["error"]


def test_performance_speaks_of_the_project_and_its_figures() -> None:
    performance = PERFORMANCE  # the whole page: its figures are under several headings
    assert not re.search(r"workplace|journal-less|root filesystem", performance, re.I)
    rows = re.findall(r"^\| (receiver|worker)[^|]*\|\s*[\d.]+ \|\s*[\d.]+ \|\s*[\d.]+ \|", performance, re.M)
    assert {"receiver", "worker"} <= set(rows)  # the figures stay: mo-spool, its baseline, their ratio
