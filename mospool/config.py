"""Settings: read config.ini, validate every key, and hand out frozen dataclasses.

Every error names the section and key, so a typo stops start-up with a message a person can act on.

One concept, the settings, in some 370 lines: every core section's dataclass beside the ranges it is
checked against, so a key and its validation are read together (outputs declare their own sections).
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mospool.values import (
    DAY,
    GIB,
    Network,
    boolean,
    index_url,
    log_level,
    networks,
    node_name,
    seconds,
    token,
    url_path,
    whole,
    words,
)

CONFIG_ENV = "MOSPOOL_CONFIG"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.ini"
# What deploy/install.sh writes; the installed `mospool` command reads it when no other config is named.
INSTALLED_CONFIG = Path("/etc/mo-spool/config.ini")
# The operator command (pyproject.toml [project.scripts]): every hint, page and doc spells it this one way.
COMMAND = "mospool"
# What every entry point exits with when the config or the spool it names is unusable.
EXIT_CONFIG = 2


class ConfigError(ValueError):
    """A setting is missing, unknown or malformed; the message names it."""


def host_name() -> str:
    """[spool] node when config.ini leaves it empty: the machine's host name, as a node name."""
    return node_name(socket.gethostname().split(".")[0])


@dataclass(frozen=True)
class SpoolSettings:
    dir: Path
    tmp_grace_seconds: int = 3600
    node: str = dataclasses.field(default_factory=host_name)  # this VM's name, on every index row


@dataclass(frozen=True)
class IndexSettings:
    """Where the record index lives: empty url, SQLite in the spool; a postgresql:// URL, shared by VMs."""

    url: str = ""
    password_file: Path | None = None  # the PostgreSQL password, never in config.ini itself

    @property
    def shared(self) -> bool:
        return bool(self.url)


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
    # Below this free space the worker files nothing (postbacks wait in incoming/): above the receiver's
    # 64 MiB by what the downloads in flight may write (16 parts at max_bytes), so the receiver still stores.
    min_free_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class MediaSettings:
    connect_timeout_seconds: float = 10.0
    timeout_seconds: float = 60.0
    max_bytes: int = 10 * 1024 * 1024
    allowed_schemes: tuple[str, ...] = ("http", "https")
    allowed_hosts: tuple[str, ...] = ()
    allow_private_networks: bool = False
    max_redirects: int = 3
    parallel_downloads: int = 16  # for the whole worker, across postbacks and origins
    per_host_downloads: int = 8  # on one origin: a stuck one leaves the other half to the rest
    # An MMS has at most 8 slides (Sinch), each a text and one object, plus its SMIL layout: 17 parts; twice
    # that, for carriers that split differently. Parts beyond it are named in the record, not fetched.
    max_parts: int = 32
    max_total_bytes: int = 64 * 1024 * 1024  # all the parts of one postback
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
class LoggingSettings:
    level: str = "INFO"


Parser = Callable[[str], Any]


@dataclass(frozen=True)
class Section:
    """One [section] of config.ini: its settings dataclass (every field with a default but [spool] dir), the
    parser of each key (the key names are the config file's contract), the keys never echoed back, and a
    rule across keys (``check`` returns what is wrong, or None)."""

    name: str
    settings: type[Any]
    keys: Mapping[str, Parser]
    secret_keys: frozenset[str] = frozenset()
    check: Callable[[Any], str | None] | None = None


@dataclass(frozen=True)
class Settings:
    spool: SpoolSettings
    index: IndexSettings = IndexSettings()
    receiver: ReceiverSettings = ReceiverSettings()
    worker: WorkerSettings = WorkerSettings()
    media: MediaSettings = MediaSettings()
    retention: RetentionSettings = RetentionSettings()
    monitor: MonitorSettings = MonitorSettings()
    log_level: str = "INFO"
    # Each output's settings, by its config section (mospool.outputs): what the registry's outputs declare.
    outputs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def for_spool(cls, spool_dir: Path, **sections: Any) -> Settings:
        """Defaults everywhere but the spool and the sections given (an output's too, by its name)."""
        core = {name: value for name, value in sections.items() if name in _CORE_FIELDS}
        outputs = {section.name: section.settings() for section in output_sections()}
        outputs.update((name, value) for name, value in sections.items() if name not in _CORE_FIELDS)
        return cls(spool=SpoolSettings(dir=Path(spool_dir)), **core, outputs=outputs)

    def output(self, section: Section) -> Any:
        """An output's settings: as configured, or its defaults when config.ini has no such section."""
        found = self.outputs.get(section.name)
        return section.settings() if found is None else found


MIB = 1024 * 1024
SIZE_CAP = 2**50  # 1 PiB: more than any disk, less than an overflow
CORE_SECTIONS = (
    Section(
        "spool", SpoolSettings, {"dir": str, "tmp_grace_seconds": whole(1, 30 * int(DAY)), "node": node_name}
    ),
    Section("index", IndexSettings, {"url": index_url, "password_file": str}, secret_keys=frozenset({"url"})),
    Section(
        "receiver",
        ReceiverSettings,
        {
            "path": url_path,
            "max_body_bytes": whole(1, 64 * MIB),
            "min_free_bytes": whole(0, SIZE_CAP),
            "allowed_networks": networks,
            "trusted_proxy_count": whole(0, 10),
            "token": token,
            "retry_after_seconds": whole(1, int(DAY)),
        },
    ),
    Section(
        "worker",
        WorkerSettings,
        {
            "concurrency": whole(1, 256),
            "rescan_seconds": seconds(0.1, 3600),
            "stop_timeout_seconds": seconds(0.1, 600),
            "min_free_bytes": whole(0, SIZE_CAP),
        },
    ),
    Section(
        "media",
        MediaSettings,
        {
            "connect_timeout_seconds": seconds(0.1, 300),
            "timeout_seconds": seconds(0.1, 3600),
            "max_bytes": whole(1, GIB),
            "allowed_schemes": words,
            "allowed_hosts": words,
            "allow_private_networks": boolean,
            "max_redirects": whole(0, 20),
            "parallel_downloads": whole(1, 256),
            "per_host_downloads": whole(1, 256),
            "max_parts": whole(1, 1000),
            "max_total_bytes": whole(1, 16 * GIB),
            "attempts": whole(1, 100),
            "retry_base_seconds": seconds(0.01, DAY),
            "give_up_after_seconds": seconds(0.01, 30 * DAY),
        },
    ),
    Section(
        "retention",
        RetentionSettings,
        {
            "processed_days": whole(1, 36500),
            "failed_days": whole(1, 36500),
            "duplicates_days": whole(1, 36500),
        },
    ),
    Section(
        "monitor",
        MonitorSettings,
        {"metrics_textfile": str, "backlog_alert_seconds": whole(1, 30 * int(DAY))},
    ),
    Section("logging", LoggingSettings, {"level": log_level}),
)
_CORE_FIELDS = {field.name for field in dataclasses.fields(Settings)} - {"outputs"}
_CORE_SECTION_NAMES = {section.name for section in CORE_SECTIONS}


_SECTIONS: dict[str, Section] = {section.name: section for section in CORE_SECTIONS}


def register_section(section: Section) -> None:
    """Another section config.ini may hold: each output registers its own (mospool.outputs.registry), so
    whoever loads settings imports ``mospool.outputs`` first (every entry point does)."""
    _SECTIONS[section.name] = section


def unregister_section(name: str) -> None:
    if name not in _CORE_SECTION_NAMES:
        _SECTIONS.pop(name, None)


def sections() -> tuple[Section, ...]:
    """Every section config.ini may hold: the core ones, then the outputs' in the order they registered."""
    return tuple(_SECTIONS.values())


def output_sections() -> tuple[Section, ...]:
    return tuple(section for section in _SECTIONS.values() if section.name not in _CORE_SECTION_NAMES)


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
    known = {section.name: section for section in sections()}
    values = _validated(parser, path, known)
    return _build(values, known, base=path.resolve().parent, path=path)


def _validated(
    parser: configparser.ConfigParser, path: Path, known: Mapping[str, Section]
) -> dict[str, dict[str, Any]]:
    values: dict[str, dict[str, Any]] = {}
    for name in parser.sections():
        section = known.get(name)
        if section is None:
            raise ConfigError(f"{path}: unknown section [{name}]; known: {', '.join(known)}")
        values[name] = {}
        for key, raw in parser.items(name):
            if key not in section.keys:
                raise ConfigError(f"{path}: unknown key [{name}] {key}; known: {', '.join(section.keys)}")
            try:
                values[name][key] = section.keys[key](raw.strip())
            except ValueError as exc:
                shown = "(hidden)" if key in section.secret_keys else repr(raw)
                raise ConfigError(f"{path}: [{name}] {key} = {shown}: {exc}") from exc
    if not values.get("spool", {}).get("dir"):
        raise ConfigError(f"{path}: [spool] dir is required")
    return values


def _build(
    values: dict[str, dict[str, Any]], known: Mapping[str, Section], base: Path, path: Path
) -> Settings:
    values = {name: dict(keys) for name, keys in values.items()}
    spool = values["spool"]
    spool["dir"] = (base / spool["dir"]).resolve()
    if not spool.get("node", True):
        spool.pop("node")  # empty: the host name
    _resolve_file(values.get("index", {}), "password_file", base)
    _resolve_file(values.get("monitor", {}), "metrics_textfile", base)
    built = {name: section.settings(**values.get(name, {})) for name, section in known.items()}
    for name, section in known.items():
        problem = section.check(built[name]) if section.check else None
        if problem:
            raise ConfigError(f"{path}: {problem}")
    return Settings(
        spool=built["spool"],
        index=built["index"],
        receiver=built["receiver"],
        worker=built["worker"],
        media=built["media"],
        retention=built["retention"],
        monitor=built["monitor"],
        log_level=built["logging"].level,
        outputs={name: built[name] for name in known if name not in _CORE_SECTION_NAMES},
    )


def _resolve_file(keys: dict[str, Any], key: str, base: Path) -> None:
    """A file named relative to the config file's folder, made absolute; an empty value means the default."""
    if keys.get(key):
        keys[key] = (base / keys[key]).resolve()
    else:
        keys.pop(key, None)


def replace(settings: Settings, section: str, **changes: Any) -> Settings:
    """A copy of settings with some keys of one section (a core one, or an output's) changed."""
    if section in _CORE_FIELDS:
        updated = dataclasses.replace(getattr(settings, section), **changes)
        return dataclasses.replace(settings, **{section: updated})
    output = dataclasses.replace(settings.outputs[section], **changes)
    return dataclasses.replace(settings, outputs={**settings.outputs, section: output})


def section_keys() -> Sequence[tuple[str, str]]:
    """Every (section, key) the config file accepts, for the docs test."""
    return [(section.name, key) for section in sections() for key in section.keys]
