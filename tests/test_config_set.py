"""deploy/config_set.py: install.sh's way of writing the values it was given into an operator's config.ini."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mospool.config import load_settings
from tests.servers import REPO

SET = [sys.executable, str(REPO / "deploy" / "config_set.py")]


def test_a_key_is_set_in_its_own_section_keeping_every_comment(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    shipped = (REPO / "deploy" / "config.ini").read_text()
    config.write_text(shipped.replace("dir = /var/lib/mo-spool/spool", f"dir = {tmp_path / 'spool'}"))
    config.chmod(0o640)
    url = "postgresql://mospool@db.internal/mospool?sslmode=verify-full&application_name=mo-spool"
    subprocess.run([*SET, str(config), "index", "url", url], check=True)
    subprocess.run([*SET, str(config), "spool", "node", "vm-a"], check=True)
    settings = load_settings(config)
    assert (settings.index.url, settings.spool.node) == (url, "vm-a")
    text = config.read_text()
    assert text.count("\n#") == shipped.count("\n#")  # every comment kept
    assert "[forward]\n" in text and load_settings(config).outputs["forward"].url == ""
    assert config.stat().st_mode & 0o777 == 0o640


def test_a_config_of_an_older_release_gets_the_keys_it_lacks(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    config.write_text(f"[spool]\ndir = {tmp_path / 'spool'}\n[forward]\nurl =\n")
    subprocess.run([*SET, str(config), "spool", "node", "vm-b"], check=True)
    subprocess.run([*SET, str(config), "index", "url", "postgresql://mospool@db/mospool"], check=True)
    settings = load_settings(config)
    assert (settings.spool.node, settings.index.url) == ("vm-b", "postgresql://mospool@db/mospool")
