"""Characters a hostile value must not bring as themselves to a log line, a terminal or a page.

Control characters (C0 but tab, DEL, C1: a newline forges a log line, ESC starts a terminal sequence, NUL
cuts a C string), the line and paragraph separators, and the bidirectional controls (an RLO shows a phone
number reversed, an isolate reorders what follows it). Each is shown by name instead: ``escaped`` writes
``\\u202e`` (logs, the CLI), ``shown`` writes ``[U+202E]`` (pages, for people).
"""

from __future__ import annotations

BIDI_CONTROLS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
CODES = (*range(0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *BIDI_CONTROLS)

ESCAPES = {code: f"\\u{code:04x}" for code in (*CODES, 0x09)}  # a log line keeps no tab either
# A page's text keeps its tabs and line breaks (whitespace in HTML, harmless); the rest is shown.
SHOWN = {code: f"[U+{code:04X}]" for code in CODES if code not in (0x0A, 0x0D)}
# Each of them is unprintable to str.isprintable (categories Cc, Cf, Zl, Zp): a printable text, most of
# them, is returned as it is without a look-up per character.


def escaped(text: str) -> str:
    """On one line, with every such character written as ``\\uXXXX``."""
    return text if text.isprintable() else text.translate(ESCAPES)


def shown(text: str) -> str:
    """For a page: every such character but the line breaks written as ``[U+XXXX]``: seen, not obeyed."""
    return text if text.isprintable() else text.translate(SHOWN)
