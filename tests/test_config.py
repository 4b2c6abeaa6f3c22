"""config.ini parsing and validation."""

from __future__ import annotations

import importlib
import ipaddress
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mospool import cli, config
from mospool.config import (
    DEFAULT_CONFIG,
    ConfigError,
    ReceiverSettings,
    Settings,
    config_path,
    installed_default,
    load_settings,
    section_keys,
)
from mospool.outputs import webhooks
from tests.servers import REPO, free_port, receiver_commands


def test_shipped_config_loads_with_spool_under_the_repo() -> None:
    settings = load_settings(DEFAULT_CONFIG)
    assert settings.spool.dir == REPO / "var" / "spool"
    assert settings.receiver.path == "/postback"
    assert settings.receiver.max_body_bytes == 1024 * 1024
    assert settings.media.allowed_schemes == ("http", "https")
    assert settings.media.allow_private_networks is False


def test_every_key_is_documented_in_config_ini_and_the_docs() -> None:
    shipped = DEFAULT_CONFIG.read_text()
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    docs = "\n".join(page.read_text() for page in pages)
    for section, key in section_keys():
        assert f"\n{key} =" in shipped, f"[{section}] {key} missing from config.ini"
        assert f"`{key}`" in docs, f"[{section}] {key} missing from README.md and docs/*.md"


def test_the_vm_config_is_the_defaults_but_for_the_spool_and_the_proxy() -> None:
    """deploy/config.ini is what install.sh installs: every key, and no value a local checkout might loosen."""
    shipped = load_settings(REPO / "deploy" / "config.ini")
    expected = Settings.for_spool(
        Path("/var/lib/mo-spool/spool"), receiver=ReceiverSettings(trusted_proxy_count=1)
    )
    assert shipped == expected
    text = (REPO / "deploy" / "config.ini").read_text()
    for section, key in section_keys():
        assert f"\n{key} =" in text, f"[{section}] {key} missing from deploy/config.ini"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(f"[spool]\ndir = spool\n{text}\n")
    return path


def test_relative_spool_is_relative_to_the_config_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[receiver]\nallowed_networks = 10.0.0.0/8, 192.0.2.1"))
    assert settings.spool.dir == tmp_path / "spool"
    assert settings.receiver.allowed_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[receiver]\nmax_body_byte = 5", r"unknown key \[receiver\] max_body_byte"),
        ("[reciever]\npath = /x", r"unknown section \[reciever\]"),
        ("[receiver]\nmax_body_bytes = lots", r"\[receiver\] max_body_bytes = 'lots'"),
        ("[receiver]\nmax_body_bytes = -1", r"\[receiver\] max_body_bytes .*negative"),
        ("[receiver]\nallowed_networks = 10.0.0.0/33", r"\[receiver\] allowed_networks"),
        ("[receiver]\npath = postback", r"\[receiver\] path"),
        ("[receiver]\ntoken = a/b", r"\[receiver\] token"),
        ("[media]\nallow_private_networks = maybe", r"\[media\] allow_private_networks"),
        ("[worker]\nconcurrency = 0", r"\[worker\] concurrency .*at least 1"),
        ("node = vm a", r"\[spool\] node = 'vm a': must be at most 63 letters"),
        ("[index]\nurl = mysql://db/mospool", r"\[index\] url = \(hidden\): must be empty .* postgresql://"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text))


def test_the_node_is_the_host_name_unless_set_and_the_password_file_is_relative_to_the_config(
    tmp_path: Path,
) -> None:
    default = load_settings(write(tmp_path, "node =\n[index]\nurl =\npassword_file ="))
    assert default.spool.node == socket.gethostname().split(".")[0]
    assert (default.index.url, default.index.password_file, default.index.shared) == ("", None, False)
    shared = load_settings(
        write(tmp_path, "node = vm-b\n[index]\nurl = postgresql://mospool@db/mospool\npassword_file = pw")
    )
    assert (shared.spool.node, shared.index.shared) == ("vm-b", True)
    assert shared.index.password_file == tmp_path / "pw"


def test_missing_spool_dir_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "empty.ini").write_text("[receiver]\npath = /x\n")
    with pytest.raises(ConfigError, match=r"\[spool\] dir is required"):
        load_settings(tmp_path / "empty.ini")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.ini")


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOSPOOL_CONFIG", "/etc/from-env.ini")
    assert config_path("/etc/from-cli.ini") == Path("/etc/from-cli.ini")
    assert config_path(None) == Path("/etc/from-env.ini")
    monkeypatch.delenv("MOSPOOL_CONFIG")
    assert config_path(None) == DEFAULT_CONFIG


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[receiver]\nallowed_networks = 10.0.0.0/8 203.0.113.5/24",
            r"\[receiver\] allowed_networks = .*203\.0\.113\.5/24 has host bits set: write 203\.0\.113\.0/24",
        ),
        (
            "[receiver]\nmax_body_bytes = 1MB",
            r"\[receiver\] max_body_bytes = '1MB': must be a whole number .*no KB, MB",
        ),
        (
            "[media]\ntimeout_seconds = 10s",
            r"\[media\] timeout_seconds = '10s': must be a number .*without a unit",
        ),
    ],
)
def test_values_a_person_might_write_get_a_message_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings(write(tmp_path, text))
    assert "invalid literal" not in str(raised.value) and "could not convert" not in str(raised.value)


def test_the_installed_command_defaults_to_etc_mo_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--config, then $MOSPOOL_CONFIG, then /etc/mo-spool/config.ini when it exists, then the checkout's."""
    monkeypatch.delenv("MOSPOOL_CONFIG", raising=False)
    etc = tmp_path / "etc-mo-spool.ini"
    monkeypatch.setattr(config, "INSTALLED_CONFIG", etc)
    assert installed_default() == DEFAULT_CONFIG  # not installed here
    etc.write_text("[spool]\ndir = /nowhere\n")
    assert installed_default() == etc
    assert config_path(None, installed_default()) == etc
    monkeypatch.setenv("MOSPOOL_CONFIG", "/from/env.ini")
    assert config_path(None, installed_default()) == Path("/from/env.ini")
    assert config_path("/from/cli.ini", installed_default()) == Path("/from/cli.ini")
    assert config_path(None) == Path("/from/env.ini")  # python -m mospool: never /etc unless asked


def test_pyproject_installs_the_mospool_command() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["mospool"].split(":")
    assert getattr(importlib.import_module(module), function) is cli.installed


BAD_VALUE = "[spool]\ndir = {spool}\n[receiver]\nmax_body_bytes = 1MB\n"
SPOOL_IS_A_FILE = "[spool]\ndir = {file}\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "expected"), [(BAD_VALUE, "max_body_bytes"), (SPOOL_IS_A_FILE, "[spool] dir")]
)
def test_a_bad_config_exits_2_from_every_entry_point(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    path = tmp_path / "config.ini"
    path.write_text(text.format(spool=tmp_path / "spool", file=tmp_path / "a-file"))
    env = {**os.environ, "MOSPOOL_CONFIG": str(path), "MOSPOOL_BIND": f"127.0.0.1:{free_port()}"}
    entry_points = {
        **receiver_commands(free_port()),
        "spool_worker.py": [sys.executable, "spool_worker.py"],
        "python -m mospool": [sys.executable, "-m", "mospool", "status"],
    }
    for name, command in entry_points.items():
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (name, result.stderr[-2000:])
        assert expected in result.stderr and str(path) in result.stderr, (name, result.stderr[-2000:])


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_forward_is_off_by_default_and_read_when_set(tmp_path: Path) -> None:
    assert load_settings(DEFAULT_CONFIG).output(webhooks.SECTION).enabled is False
    text = f"[forward]\nurl = https://app.example.com/hooks\nsecret = {SECRET}\nstates = processed failed"
    forward = load_settings(write(tmp_path, text)).output(webhooks.SECTION)
    assert forward.enabled
    assert forward.states == ("processed", "failed")
    assert forward.secret == SECRET


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("url = https://a.example/h", r"\[forward\] secret is required when \[forward\] url is set"),
        ("secret = not-a-secret", r"\[forward\] secret = \(hidden\): must be whsec_"),
        ("secret = whsec_c2hvcnQ=", r"\[forward\] secret = \(hidden\): must be whsec_"),
        ("url = ftp://a.example/h", r"\[forward\] url = 'ftp://a.example/h': must be an http"),
        ("states = processed incoming", r"\[forward\] states"),
        ("concurrency = 0", r"\[forward\] concurrency"),
    ],
)
def test_bad_forward_settings_name_the_key_and_hide_the_secret(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(write(tmp_path, f"[forward]\n{text}"))
    assert "not-a-secret" not in str(caught.value)
