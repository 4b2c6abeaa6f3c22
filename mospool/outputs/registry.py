"""The output registry: what an output declares, and the list the rest of the project iterates.

An output is one module. It declares a ``Spec``: its config section (settings and key parsers), when it is
on, how it is built, and what it adds to ``mospool status`` and the front page. Its built object is a filer
``Output`` (prepare, commit, published, tick, close) and adds its own metrics. Config, the worker, the CLI's
status and the front page iterate ``registered()``; none of them names an output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mospool.config import Section, Settings, register_section, unregister_section
from mospool.filer import BaseOutput as BaseOutput  # an output subclasses it from here, with its Spec
from mospool.filer import Output
from mospool.index import Index
from mospool.metrics import Metrics
from mospool.store import Outbox, Spool


@dataclass(frozen=True)
class Context:
    """What an output is built with."""

    settings: Settings
    spool: Spool
    index: Index
    metrics: Metrics


@dataclass(frozen=True)
class StatusPart:
    """What an output adds to `mospool status` (under ``key``) and, once it was ever on, the front page."""

    key: str
    counts: dict[str, int]
    line: str  # its line in the text of `mospool status`
    alerts: list[str] = field(default_factory=list)
    active: bool = True  # False: the output was never switched on here (the front page leaves it out)


def _always(settings: Any) -> bool:
    return True


@dataclass(frozen=True)
class Spec:
    section: Section
    build: Callable[[Any, Context], Output]  # (its settings, the context) -> the filer output
    enabled: Callable[[Any], bool] = _always
    status: Callable[[Any, Spool], StatusPart] | None = None
    destination: str | None = None  # a delivering output's outbox (mospool.store.outbox); None: it has none
    risks: Callable[[Any], list[str]] | None = None  # its risky settings, warned of at start (mospool.risks)

    @property
    def name(self) -> str:
        return self.section.name

    def settings(self, settings: Settings) -> Any:
        return settings.output(self.section)


_REGISTRY: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    """Add an output (once per name) and its config section; returns it: ``SPEC = register(Spec(...))``."""
    _REGISTRY[spec.name] = spec
    register_section(spec.section)
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)
    unregister_section(name)


def registered() -> list[Spec]:
    """Every output, in the order they registered: the built-in ones first."""
    return list(_REGISTRY.values())


def build_outputs(context: Context) -> list[Output]:
    """The outputs the configuration switches on, built, in registry order."""
    built = []
    for spec in registered():
        settings = spec.settings(context.settings)
        if spec.enabled(settings):
            built.append(spec.build(settings, context))
    return built


def outboxes(spool: Spool) -> dict[str, Outbox]:
    """Each delivering output's outbox, by the name of its undelivered folder (what `list` takes)."""
    found = (spool.outbox(spec.destination) for spec in registered() if spec.destination is not None)
    return {outbox.parked_label: outbox for outbox in found}


def status_parts(settings: Settings, spool: Spool) -> list[StatusPart]:
    return [spec.status(spec.settings(settings), spool) for spec in registered() if spec.status]
