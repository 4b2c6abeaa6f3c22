"""A retry schedule, pure: what was tried so far and the new errors in, the next step out.

A transient failure (for media: connection error, timeout, 5xx, 408, 429) waits ``base_seconds``, doubling
each time (or a longer ``Retry-After``), at most ``attempts`` tries in all and never later than
``give_up_after_seconds`` after the first failure. The caller keeps the state on disk (media: ``retry.json``)
so a restart keeps the schedule.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class RetrySettings(Protocol):
    """The three keys every retrying section of config.ini has ([media], and each delivery output's)."""

    @property
    def retry_base_seconds(self) -> float: ...
    @property
    def attempts(self) -> int: ...
    @property
    def give_up_after_seconds(self) -> float: ...


@dataclass(frozen=True)
class Policy:
    base_seconds: float
    attempts: int
    give_up_after_seconds: float

    @classmethod
    def of(cls, settings: RetrySettings) -> Policy:
        return cls(settings.retry_base_seconds, settings.attempts, settings.give_up_after_seconds)


@dataclass(frozen=True)
class Step:
    """The schedule after one more failed try: give up, or try again at ``state['next_try_at']``."""

    give_up: bool
    state: dict[str, Any]  # what retry.json holds from now on

    @property
    def attempts(self) -> int:
        return int(self.state["attempts"])


def after_failure(
    previous: Mapping[str, Any],
    parts: Sequence[Mapping[str, Any]],
    retry_after: Sequence[float],
    policy: Policy,
    now: dt.datetime,
) -> Step:
    """The next step once a try failed on ``parts`` (each ``{"url", "error", "permanent"}``)."""
    attempts = attempts_so_far(previous) + 1
    first = dt.datetime.fromisoformat(previous.get("first_failure_at") or now.isoformat())
    delay = max([policy.base_seconds * 2 ** (attempts - 1), *retry_after])
    next_try = now + dt.timedelta(seconds=delay)
    state = {
        "attempts": attempts,
        "first_failure_at": first.isoformat(),
        "next_try_at": next_try.isoformat(),
        "next_try_epoch": next_try.timestamp(),
        "errors": [*previous.get("errors", []), {"at": now.isoformat(), "parts": list(parts)}],
    }
    give_up = attempts >= policy.attempts or (next_try - first).total_seconds() > policy.give_up_after_seconds
    return Step(give_up, state)


def postponed(previous: Mapping[str, Any], reason: str, seconds: float, now: dt.datetime) -> dict[str, Any]:
    """The schedule of a postback set aside for ``seconds`` without a try (its origin is not keeping up):
    the attempts and errors so far stay as they are, ``postponed`` says why it waits."""
    next_try = now + dt.timedelta(seconds=seconds)
    return {
        **previous,
        "next_try_at": next_try.isoformat(),
        "next_try_epoch": next_try.timestamp(),
        "postponed": reason,
    }


def attempts_so_far(state: Mapping[str, Any]) -> int:
    return int(state.get("attempts", 0))


def due(state: Mapping[str, Any], now_epoch: float) -> bool:
    return float(state.get("next_try_epoch", 0)) <= now_epoch


def transient_status(status: int) -> bool:
    """An HTTP answer worth trying again later: 408, 429 or any 5xx (media parts and deliveries alike)."""
    return status in (408, 429) or status >= 500


def retry_after_seconds(raw: str | None) -> float | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) as seconds from now; None if unusable."""
    if not raw:
        return None
    if raw.strip().isdigit():
        return float(raw.strip())
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(raw)
        return max(when.timestamp() - time.time(), 0.0)
    return None
