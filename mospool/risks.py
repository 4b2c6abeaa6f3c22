"""Settings that are allowed but risky: the worker and the receiver log each one as a WARNING when they start.

They are not errors, because each has its place (a test machine, a small VM), but an operator must not find
out about them from an incident: the SSRF guard switched off, webhooks sent in clear text across a network,
a spool sharing its filesystem with the system. Outputs add their own through their ``Spec.risks``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mospool.config import Settings
from mospool.outputs import registered

log = logging.getLogger(__name__)


def risks(settings: Settings) -> list[str]:
    """What is risky in these settings, one sentence each (empty: nothing)."""
    found = []
    if settings.media.allow_private_networks:
        found.append(
            "[media] allow_private_networks = yes: the SSRF guard is off, so anyone who can post can make "
            "this host fetch from its own network (cloud metadata at 169.254.169.254, services on "
            "localhost); it is for trying mo-spool on your own machine only"
        )
    if _shares_root_filesystem(settings.spool.dir):
        found.append(
            f"[spool] dir {settings.spool.dir} is on the filesystem of /: a backlog or a flood that fills "
            "the spool fills the system's own disk too; give the spool a filesystem of its own"
        )
    for spec in registered():
        if spec.risks is not None and spec.enabled(spec.settings(settings)):
            found += spec.risks(spec.settings(settings))
    return found


def warn(settings: Settings) -> None:
    """Log each risk once; the entry points call this once, at start."""
    for risk in risks(settings):
        log.warning("risky setting: %s", risk)


def _shares_root_filesystem(folder: Path) -> bool:
    """Whether ``folder`` (or, while it does not exist yet, its nearest parent that does) is on /'s device."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing.stat().st_dev == Path("/").stat().st_dev
