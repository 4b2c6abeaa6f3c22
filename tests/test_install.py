"""deploy/install.sh for real, on a fresh Debian 12 made by debootstrap (needs root and Debian's registry, as CI has).

Systemd does not run inside the chroot, so the units are enabled, not started; the test then starts what they
would start, as the `mospool` user with the installed files, behind the installed nginx site (its ports moved to
free loopback ones), and posts a postback through it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mospool.config import load_settings
from tests.nginx_stack import loopback_listens, render, wait_for_unix_socket
from tests.pg import Cluster
from tests.servers import REPO, free_port

# debootstrap, apt-get and pip over the network take minutes on a busy machine: far over the suite's 120 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,ca-certificates,systemd,openssl"


def in_chroot(root: Path, script: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(root), "bash", "-euc", script],
        capture_output=True,
        text=True,
        check=check,
        timeout=900,
    )


@pytest.fixture(scope="module")
def debian() -> Iterator[Path]:
    """A fresh Debian 12 with the checkout's files in /root/mo-spool. Not under pytest's tmp dirs: /proc is
    mounted inside, so the folder is unmounted and removed here, never by a later run's clean-up."""
    holder = Path(tempfile.mkdtemp(prefix="mospool-vm-"))
    root = holder / "root"
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(root), MIRROR],
        check=True,
        capture_output=True,
    )
    for host_file in ("/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt"):  # the host's network trust
        (root / host_file.lstrip("/")).write_bytes(Path(host_file).read_bytes())
    policy = root / "usr/sbin/policy-rc.d"  # packages must not start services in a chroot
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in tracked.stdout.splitlines():
        target = root / "root/mo-spool" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    # A checkout set up to try MMS locally (README "Try it"): none of it may reach the VM's config.
    local = root / "root/mo-spool/config.ini"
    local.write_text(local.read_text().replace("allow_private_networks = no", "allow_private_networks = yes"))
    # A fresh VM may have no package lists at all: install.sh must fetch them itself.
    for lists in (root / "var/lib/apt/lists").glob("*_Packages*"):
        lists.unlink()
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=True)
        shutil.rmtree(holder)


@pytest.fixture(scope="module")
def installed(debian: Path) -> tuple[Path, str]:
    result = in_chroot(debian, "cd /root/mo-spool && bash deploy/install.sh")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return debian, result.stdout


def test_install_creates_user_venv_config_certificate_and_units(installed: tuple[Path, str]) -> None:
    root, out = installed
    assert "mospool:x:" in (root / "etc/passwd").read_text()
    assert any(
        line.startswith("mospool:") and "www-data" in line
        for line in (root / "etc/group").read_text().splitlines()
    )
    assert out.index("+ apt-get update") < out.index("+ apt-get install")
    assert "allow_private_networks = yes" in (root / "root/mo-spool/config.ini").read_text()
    settings = load_settings(root / "etc/mo-spool/config.ini")
    assert settings.spool.dir == Path("/var/lib/mo-spool/spool")
    assert settings.receiver.trusted_proxy_count == 1
    assert settings.media.allow_private_networks is False  # the checkout's local setting is not carried over
    assert not (root / "opt/mo-spool/app/config.ini").exists()
    assert (root / "opt/mo-spool/venv/bin/gunicorn").is_file()
    assert (root / "etc/mo-spool/tls/privkey.pem").stat().st_mode & 0o777 == 0o600
    for unit in ("multi-user.target.wants/mo-spool-receiver.service", "multi-user.target.wants/mo-spool-worker.service",
                 "timers.target.wants/mo-spool-purge.timer"):  # fmt: skip
        assert (root / "etc/systemd/system" / unit).is_symlink(), unit
    nginx = in_chroot(root, "nginx -t")
    assert nginx.returncode == 0 and "test is successful" in nginx.stderr, nginx.stderr
    assert "https://<your host>/postback/<token>" in out


def test_the_mospool_command_reads_etc_and_never_creates_the_spool(installed: tuple[Path, str]) -> None:
    """On PATH for root and the service user, no --config: /etc/mo-spool/config.ini. Nothing has started yet,
    so the spool folder is still empty: status says so, names it and [spool] dir, and leaves it empty."""
    root, _ = installed
    for user in ("root", "mospool"):
        result = in_chroot(root, f"cd / && runuser -u {user} -- mospool status")
        assert result.returncode == 2, result.stdout + result.stderr
        assert "/var/lib/mo-spool/spool is not a spool" in result.stderr, result.stderr
        assert "[spool] dir in /etc/mo-spool/config.ini" in result.stderr, result.stderr
    assert list((root / "var/lib/mo-spool/spool").iterdir()) == []


def test_a_second_run_keeps_what_the_operator_edited_and_upgrades_the_rest(
    installed: tuple[Path, str],
) -> None:
    root, _ = installed
    config = root / "etc/mo-spool/config.ini"
    config.write_text(config.read_text().replace("token =\n", "token = operators-own\n"))
    certificate = (root / "etc/mo-spool/tls/fullchain.pem").read_bytes()
    site = root / "etc/nginx/sites-available/mo-spool"
    site.write_text(
        site.read_text().replace("server_name mo-spool.example.com;", "server_name mo.example.org;")
    )
    edited_site = site.read_text()
    newer_browse = root / "root/mo-spool/deploy/nginx/mo-spool-browse.conf"  # as after a `git pull`
    newer_browse.write_text(newer_browse.read_text() + "# a newer version\n")
    result = in_chroot(root, "cd /root/mo-spool && bash deploy/install.sh")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "token = operators-own" in config.read_text()
    assert (root / "etc/mo-spool/tls/fullchain.pem").read_bytes() == certificate
    assert "exists and is kept" in result.stdout
    assert site.read_text() == edited_site and "server_name mo.example.org;" in edited_site
    assert "/etc/nginx/sites-available/mo-spool was edited and is kept" in result.stdout
    browse = root / "etc/nginx/sites-available/mo-spool-browse"
    assert browse.read_text() == newer_browse.read_text()  # not edited here: upgraded


def test_the_installed_stack_takes_a_postback(installed: tuple[Path, str]) -> None:
    root, _ = installed
    https, http, browse = free_port(), free_port(), free_port()
    sites = root / "etc/nginx/sites-available"
    render(sites / "mo-spool", sites / "mo-spool", loopback_listens(https, http))
    render(sites / "mo-spool-browse", sites / "mo-spool-browse", {"127.0.0.1:8025": f"127.0.0.1:{browse}"})
    (root / "etc/nginx/sites-enabled/default").unlink(missing_ok=True)
    (root / "run/mo-spool").mkdir(exist_ok=True)
    in_chroot(root, "chown mospool:mospool /run/mo-spool && chmod 0750 /run/mo-spool", check=True)
    services = [
        "cd /opt/mo-spool/app && exec runuser -u mospool -- env MOSPOOL_CONFIG=/etc/mo-spool/config.ini "
        "/opt/mo-spool/venv/bin/gunicorn -c deploy/gunicorn.conf.py app:app",
        "cd /opt/mo-spool/app && exec runuser -u mospool -- "
        "/opt/mo-spool/venv/bin/python spool_worker.py --config /etc/mo-spool/config.ini",
        "exec nginx -g 'daemon off;'",
    ]
    procs = [
        subprocess.Popen(["chroot", str(root), "bash", "-c", service], start_new_session=True)
        for service in services
    ]
    try:
        wait_for_unix_socket(root / "run/mo-spool/receiver.sock")
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the placeholder certificate
        body = b'{"origin":"SMS_MO","code":"N401","from":"15550001","tracking-id":"vm-1","message-text":"hi"}'
        config = (root / "etc/mo-spool/config.ini").read_text()
        token = next(
            line.split("=", 1)[1].strip() for line in config.splitlines() if line.startswith("token")
        )
        url = f"https://127.0.0.1:{https}/postback" + (f"/{token}" if token else "")
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        processed = root / "var/lib/mo-spool/spool/processed"
        while not list(processed.glob("*/*/message.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (message,) = processed.glob("*/*/message.json")
        assert message.stat().st_uid == int(in_chroot(root, "id -u mospool").stdout)
        assert message.stat().st_mode & 0o777 == 0o640
        listing = urllib.request.urlopen(f"http://127.0.0.1:{browse}/processed/", timeout=5).read().decode()
        assert message.parent.parent.name in listing
        status = in_chroot(root, "cd / && runuser -u mospool -- mospool --json status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert '"spool": "/var/lib/mo-spool/spool"' in status.stdout and '"processed": 1' in status.stdout
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def world_readable_files(root: Path) -> list[Path]:
    """Every file anyone on the VM may read: readable by others, in folders others may all enter."""
    found = []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        if here == root:
            subfolders[:] = [name for name in subfolders if name not in ("proc", "sys", "dev")]
        subfolders[:] = [name for name in subfolders if (here / name).stat().st_mode & 0o001]
        for name in files:
            path = here / name
            if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o004:
                found.append(path)
    return found


def test_a_vm_sharing_the_index_gets_its_url_and_password_without_exposing_it(
    installed: tuple[Path, str], pg: Cluster, pg_url: str
) -> None:
    """install.sh --index-url --index-password-file on the installed VM, then the VM's mospool logs in to a
    real PostgreSQL with that password (over TCP to the test cluster, which the chroot shares the network
    with). The password is nowhere anyone on the VM could read, nor in the script's output."""
    root, _ = installed
    password = "a db password that must stay private 7f3a9"
    url = pg.login(pg_url, "mospool_install", password)
    given = root / "root/db-password"
    given.write_text(password + "\n")
    given.chmod(0o600)
    result = in_chroot(
        root,
        f"cd /root/mo-spool && bash deploy/install.sh --index-url '{url}' --index-password-file /root/db-password",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert password not in result.stdout + result.stderr
    settings = load_settings(root / "etc/mo-spool/config.ini")
    hostname = in_chroot(root, "hostname -s", check=True).stdout.strip()
    assert (settings.index.url, settings.spool.node) == (url, hostname)
    assert settings.index.password_file == Path("/etc/mo-spool/index-password")
    stored = root / "etc/mo-spool/index-password"
    group = int(in_chroot(root, "getent group mospool | cut -d: -f3", check=True).stdout)
    assert (stored.stat().st_mode & 0o777, stored.stat().st_uid, stored.stat().st_gid) == (0o640, 0, group)
    assert stored.read_text().strip() == password
    exposed = [path for path in world_readable_files(root) if password.encode() in _head(path)]
    assert exposed == []
    assert settings.receiver.trusted_proxy_count == 1  # the rest of config.ini is kept
    once = in_chroot(
        root,
        "cd /opt/mo-spool/app && runuser -u mospool -- /opt/mo-spool/venv/bin/python spool_worker.py "
        "--config /etc/mo-spool/config.ini --once",
    )
    assert once.returncode == 0, once.stderr[-3000:]
    status = in_chroot(root, "cd / && runuser -u mospool -- mospool --json status")
    report = json.loads(status.stdout)
    assert report["index"]["reachable"] is True, status.stdout + status.stderr
    assert report["index"]["nodes"] == [hostname]
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the VM's worker logged in and made the tables
        assert list(conn.execute("SELECT node FROM nodes")) == [(hostname,)]


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(1 << 20)
