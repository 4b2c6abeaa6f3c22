"""Settings: read config.ini, validate every key, and hand out frozen dataclasses.

Every error names the section and key, so a typo stops start-up with a message a person can act on.
"""

from __future__ import annotations

import base64
import binascii
import configparser
import dataclasses
import ipaddress
import os
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_ENV = "MOSPOOL_CONFIG"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.ini"
# What deploy/install.sh writes; the installed `mospool` command reads it when no other config is named.
INSTALLED_CONFIG = Path("/etc/mo-spool/config.ini")
# What every entry point exits with when the config or the spool it names is unusable.
EXIT_CONFIG = 2

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A setting is missing, unknown or malformed; the message names it."""


@dataclass(frozen=True)
class SpoolSettings:
    dir: Path
    tmp_grace_seconds: int = 3600


@dataclass(frozen=True)
class ReceiverSettings:
    path: str = "/postback"
    max_body_bytes: int = 1024 * 1024
    min_free_bytes: int = 64 * 1024 * 1024
    allowed_networks: tuple[Network, ...] = ()
    trusted_proxy_count: int = 0
    token: str = ""
    retry_after_seconds: int = 300


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 16  # threads mostly wait on a group commit: more of them, bigger commits
    rescan_seconds: float = 30.0
    stop_timeout_seconds: float = 20.0


@dataclass(frozen=True)
class MediaSettings:
    connect_timeout_seconds: float = 10.0
    timeout_seconds: float = 60.0
    max_bytes: int = 10 * 1024 * 1024
    allowed_schemes: tuple[str, ...] = ("http", "https")
    allowed_hosts: tuple[str, ...] = ()
    allow_private_networks: bool = False
    max_redirects: int = 3
    parallel_downloads: int = 8  # for the whole worker, across postbacks: 4 postbacks (concurrency) x 2 parts
    attempts: int = 6
    retry_base_seconds: float = 30.0
    give_up_after_seconds: float = 6 * 3600.0


@dataclass(frozen=True)
class RetentionSettings:
    processed_days: int = 90
    failed_days: int = 30
    duplicates_days: int = 30


@dataclass(frozen=True)
class MonitorSettings:
    metrics_textfile: Path | None = None
    backlog_alert_seconds: int = 600


@dataclass(frozen=True)
class ForwardSettings:
    """Webhook delivery of each filed message to the business's application; off while ``url`` is empty."""

    url: str = ""
    secret: str = ""  # whsec_<base64>, the Standard Webhooks form
    timeout_seconds: float = 10.0
    concurrency: int = 4
    attempts: int = 12
    retry_base_seconds: float = 30.0
    give_up_after_seconds: float = 24 * 3600.0
    states: tuple[str, ...] = ("processed",)
    media_base_url: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.url)


@dataclass(frozen=True)
class PagesSettings:
    enabled: bool = True


@dataclass(frozen=True)
class Settings:
    spool: SpoolSettings
    receiver: ReceiverSettings = ReceiverSettings()
    worker: WorkerSettings = WorkerSettings()
    media: MediaSettings = MediaSettings()
    retention: RetentionSettings = RetentionSettings()
    monitor: MonitorSettings = MonitorSettings()
    forward: ForwardSettings = ForwardSettings()
    pages: PagesSettings = PagesSettings()
    log_level: str = "INFO"

    @classmethod
    def for_spool(cls, spool_dir: Path, **sections: Any) -> Settings:
        """Defaults everywhere but the spool: what tests and scripts build by hand."""
        return cls(spool=SpoolSettings(dir=Path(spool_dir)), **sections)


# --- value parsers: each takes the raw string and returns the typed value or raises ValueError


def _non_negative_int(raw: str) -> int:
    digits = raw.replace("_", "")
    if not digits.lstrip("-").isdecimal():
        raise ValueError("must be a whole number such as 1048576, without a unit (no KB, MB, s)")
    value = int(digits)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive_int(raw: str) -> int:
    value = _non_negative_int(raw)
    if value == 0:
        raise ValueError("must be at least 1")
    return value


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number such as 30 or 0.5, without a unit") from None
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _boolean(raw: str) -> bool:
    states = configparser.ConfigParser.BOOLEAN_STATES
    if raw.lower() not in states:
        raise ValueError("must be yes or no")
    return states[raw.lower()]


def _words(raw: str) -> tuple[str, ...]:
    return tuple(word for word in raw.replace(",", " ").split() if word)


def _networks(raw: str) -> tuple[Network, ...]:
    return tuple(_network(word) for word in _words(raw))


def _network(word: str) -> Network:
    """A CIDR whose host bits are zero: 203.0.113.5/24 is refused rather than silently widened."""
    try:
        return ipaddress.ip_network(word)
    except ValueError as exc:
        if "host bits set" not in str(exc):
            raise
        meant = ipaddress.ip_network(word, strict=False)
        hint = f"{word} has host bits set: write {meant} for the network, or the bare address"
        raise ValueError(hint) from None


def _url_path(raw: str) -> str:
    if not raw.startswith("/") or (raw.endswith("/") and raw != "/"):
        raise ValueError("must start with / and not end with /")
    return raw


def _token(raw: str) -> str:
    if raw and not all(c.isalnum() or c in "-_." for c in raw):
        raise ValueError("may hold only letters, digits, '-', '_' and '.'")
    return raw


def _log_level(raw: str) -> str:
    if raw.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return raw.upper()


def _http_url(raw: str) -> str:
    if not raw:
        return raw
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return raw


def _webhook_secret(raw: str) -> str:
    """The Standard Webhooks form: ``whsec_`` then the base64 of at least 24 random bytes."""
    if not raw:
        return raw
    key = raw.removeprefix("whsec_")
    try:
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not raw.startswith("whsec_") or len(decoded) < 24:
        raise ValueError(
            "must be whsec_ followed by the base64 of at least 24 random bytes; make one with: "
            "python3 -c 'import base64,os; print(\"whsec_\" + base64.b64encode(os.urandom(32)).decode())'"
        )
    return raw


def _forwarded_states(raw: str) -> tuple[str, ...]:
    states = _words(raw)
    unknown = [state for state in states if state not in FORWARDABLE_STATES]
    if unknown or not states:
        raise ValueError(f"must be one or more of {', '.join(FORWARDABLE_STATES)}")
    return states


FORWARDABLE_STATES = ("processed", "failed", "duplicates")
# Values never echoed back in an error message.
SECRET_KEYS = {("forward", "secret")}

Parser = Callable[[str], Any]

# section -> key -> (dataclass field, parser). The key names are the config file's contract.
_SCHEMA: dict[str, dict[str, Parser]] = {
    "spool": {"dir": str, "tmp_grace_seconds": _positive_int},
    "receiver": {
        "path": _url_path,
        "max_body_bytes": _positive_int,
        "min_free_bytes": _non_negative_int,
        "allowed_networks": _networks,
        "trusted_proxy_count": _non_negative_int,
        "token": _token,
        "retry_after_seconds": _positive_int,
    },
    "worker": {
        "concurrency": _positive_int,
        "rescan_seconds": _positive_float,
        "stop_timeout_seconds": _positive_float,
    },
    "media": {
        "connect_timeout_seconds": _positive_float,
        "timeout_seconds": _positive_float,
        "max_bytes": _positive_int,
        "allowed_schemes": _words,
        "allowed_hosts": _words,
        "allow_private_networks": _boolean,
        "max_redirects": _non_negative_int,
        "parallel_downloads": _positive_int,
        "attempts": _positive_int,
        "retry_base_seconds": _positive_float,
        "give_up_after_seconds": _positive_float,
    },
    "retention": {
        "processed_days": _positive_int,
        "failed_days": _positive_int,
        "duplicates_days": _positive_int,
    },
    "monitor": {"metrics_textfile": str, "backlog_alert_seconds": _positive_int},
    "forward": {
        "url": _http_url,
        "secret": _webhook_secret,
        "timeout_seconds": _positive_float,
        "concurrency": _positive_int,
        "attempts": _positive_int,
        "retry_base_seconds": _positive_float,
        "give_up_after_seconds": _positive_float,
        "states": _forwarded_states,
        "media_base_url": _http_url,
    },
    "logging": {"level": _log_level},
    "pages": {"enabled": _boolean},
}


def config_path(cli_value: str | None = None, default: Path = DEFAULT_CONFIG) -> Path:
    """--config wins, then $MOSPOOL_CONFIG, then ``default`` (config.ini beside app.py)."""
    chosen = cli_value or os.environ.get(CONFIG_ENV) or default
    return Path(chosen)


def installed_default() -> Path:
    """The installed command's default: /etc/mo-spool/config.ini on a VM, else the checkout's config.ini."""
    return INSTALLED_CONFIG if INSTALLED_CONFIG.is_file() else DEFAULT_CONFIG


def spool_problem(exc: OSError, config: Path) -> str:
    """A spool error as an operator reads it: what failed, and the setting that chose the folder."""
    return f"{exc} (the spool is [spool] dir in {config})"


def load_settings(path: Path | str) -> Settings:
    """Read and validate a config file; relative paths in it are relative to the file."""
    path = Path(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    values = _validated(parser, path)
    return _build(values, base=path.resolve().parent)


def _validated(parser: configparser.ConfigParser, path: Path) -> dict[str, dict[str, Any]]:
    values: dict[str, dict[str, Any]] = {}
    for section in parser.sections():
        keys = _SCHEMA.get(section)
        if keys is None:
            raise ConfigError(f"{path}: unknown section [{section}]; known: {', '.join(_SCHEMA)}")
        values[section] = {}
        for key, raw in parser.items(section):
            if key not in keys:
                raise ConfigError(f"{path}: unknown key [{section}] {key}; known: {', '.join(keys)}")
            try:
                values[section][key] = keys[key](raw.strip())
            except ValueError as exc:
                shown = "(hidden)" if (section, key) in SECRET_KEYS else repr(raw)
                raise ConfigError(f"{path}: [{section}] {key} = {shown}: {exc}") from exc
    if not values.get("spool", {}).get("dir"):
        raise ConfigError(f"{path}: [spool] dir is required")
    forward = values.get("forward", {})
    if forward.get("url") and not forward.get("secret"):
        raise ConfigError(f"{path}: [forward] secret is required when [forward] url is set")
    return values


def _build(values: dict[str, dict[str, Any]], base: Path) -> Settings:
    spool = dict(values.pop("spool"))
    spool["dir"] = (base / spool["dir"]).resolve()
    monitor = dict(values.pop("monitor", {}))
    if monitor.get("metrics_textfile"):
        monitor["metrics_textfile"] = (base / monitor["metrics_textfile"]).resolve()
    else:
        monitor.pop("metrics_textfile", None)
    logging_section = values.pop("logging", {})
    return Settings(
        spool=SpoolSettings(**spool),
        receiver=ReceiverSettings(**values.get("receiver", {})),
        worker=WorkerSettings(**values.get("worker", {})),
        media=MediaSettings(**values.get("media", {})),
        retention=RetentionSettings(**values.get("retention", {})),
        monitor=MonitorSettings(**monitor),
        forward=ForwardSettings(**values.get("forward", {})),
        pages=PagesSettings(**values.get("pages", {})),
        log_level=logging_section.get("level", "INFO"),
    )


def replace(settings: Settings, section: str, **changes: Any) -> Settings:
    """A copy of settings with some keys of one section changed (tests and the CLI use it)."""
    updated = dataclasses.replace(getattr(settings, section), **changes)
    return dataclasses.replace(settings, **{section: updated})


def section_keys() -> Sequence[tuple[str, str]]:
    """Every (section, key) the config file accepts, for the docs test."""
    return [(section, key) for section, keys in _SCHEMA.items() for key in keys]
