"""How a count reads in the project's messages: "1 postback", "2 postbacks", never "1 postbacks"."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str = "") -> str:
    """``count`` and the noun agreeing with it; ``plural`` when it is not the noun plus s."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
