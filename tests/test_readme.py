"""README's "Try it" recipes run for real (its SMS and the `mospool` lines after it, its MMS), the one way every
page writes the command, and what docs/performance.md may say about performance."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mospool.store import Spool
from tests.build import publish
from tests.servers import REPO, free_port, wait_for_http, worker_once, write_config

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
        worker_once(config)
    finally:
        server.terminate()
        server.wait()
    if allow == "yes":
        (message,) = spool.processed.glob("*/*/message.json")
        assert json.loads(message.read_text())["text"] == "hello from a text part\n"
    else:
        (error,) = spool.failed.glob("*/*/error.json")
        assert "allow_private_networks" in json.loads(error.read_text())["error"]


@pytest.mark.slow
def test_the_try_it_sms_and_the_mospool_lines_after_it_work_as_written(spool: Spool, tmp_path: Path) -> None:
    """The mospool command scripts/run-local installs, run as the README writes it, on the README's SMS."""
    try_it = section("Try it")
    block = try_it.split("```sh\n", 1)[1].split("```", 1)[0]
    body = re.search(r"<<'EOF'\n(\{\"origin\":\"SMS_MO\".*?)\nEOF", block, re.S)
    assert body and ". .venv/bin/activate" in block
    config = write_config(tmp_path / "config.ini", spool.root)
    publish(spool, body.group(1).encode())
    worker_once(config)
    lines = [line.split("#", 1)[0] for line in block.splitlines() if line.startswith("mospool ")]
    assert len(lines) >= 3
    env = {
        **os.environ,
        "MOSPOOL_CONFIG": str(config),
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
    }
    for line in lines:
        done = subprocess.run(shlex.split(line), env=env, capture_output=True, text=True)
        assert done.returncode == 0, (line, done.stderr)
        assert done.stdout.startswith(f"spool: {spool.root}\n"), line
        if line.startswith("mospool find"):
            assert "tracking_id=t1" in done.stdout, (line, done.stdout)


def test_every_page_writes_the_command_one_way() -> None:
    """`mospool …`, as installed on a VM and by scripts/run-local: never `python -m mospool`."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "config.ini"]
    pages += [*sorted((REPO / "deploy").rglob("*")), *sorted((REPO / "mospool").rglob("*.py"))]
    pages += sorted((REPO / "mospool").rglob("*.html"))
    found = [
        f"{page.relative_to(REPO)}: {line.strip()}"
        for page in pages
        if page.is_file() and page.name != "__main__.py"
        for line in page.read_text().splitlines()
        if re.search(r"python3? -m mospool|\.venv/bin/python -m mospool", line)
    ]
    assert found == []


def test_performance_speaks_of_the_project_and_its_figures() -> None:
    performance = PERFORMANCE  # the whole page: its figures are under several headings
    assert not re.search(r"workplace|journal-less|root filesystem", performance, re.I)
    rows = re.findall(r"^\| (receiver|worker)[^|]*\|\s*[\d.]+ \|\s*[\d.]+ \|\s*[\d.]+ \|", performance, re.M)
    assert {"receiver", "worker"} <= set(rows)  # the figures stay: mo-spool, its baseline, their ratio
