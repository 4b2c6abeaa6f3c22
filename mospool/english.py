"""How counts, lists and long texts read in the project's messages: "1 postback", "2 postbacks", never
"1 postbacks"; "a, b and 3 more"; one line cut with "…"."""

from __future__ import annotations

from collections.abc import Sequence


def counted(count: int, noun: str, plural: str = "") -> str:
    """``count`` and the noun agreeing with it; ``plural`` when it is not the noun plus s."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def listed(names: Sequence[str], most: int = 10) -> str:
    """The first ``most`` names, and how many more there are."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def shortened(text: str, width: int) -> str:
    """On one line, at most ``width`` characters, with … where it was cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
