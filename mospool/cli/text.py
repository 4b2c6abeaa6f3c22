"""The CLI's output for people: one function per kind of result (--json prints the result itself)."""

from __future__ import annotations

import json
from typing import Any

from mospool.english import counted
from mospool.store import State
from mospool.unprintable import ESCAPES, escaped


class Report(dict[str, Any]):
    """A command's result (what --json prints) and the lines only its text for people adds."""

    def __init__(self, data: dict[str, Any], lines: list[str] | None = None) -> None:
        super().__init__(data)
        self.lines = lines or []


def default(result: Any) -> str:
    return rows(result) if isinstance(result, list) else outline(result)


def rows(found: list[dict[str, Any]]) -> str:
    if not found:
        return "(none)"
    return "\n".join("  ".join(f"{k}={field(v)}" for k, v in row.items() if v is not None) for row in found)


def field(value: Any) -> str:
    """A value on one line: text with spaces, quotes or control, separator or bidi characters is quoted, and
    escaped as in the log (``mospool.unprintable``)."""
    text = str(value)
    if text and not any(c.isspace() or c in "\"'\\=" or ord(c) in ESCAPES for c in text):
        return text
    return escaped(json.dumps(text, ensure_ascii=False))


def outline(value: Any, indent: str = "") -> str:
    """Nested dicts and lists as indented `key: value` and `- item` lines (show)."""
    items = value.items() if isinstance(value, dict) else (("-", item) for item in value)
    lines = []
    for key, item in items:
        label = f"{indent}{key}" if key == "-" else f"{indent}{key}:"
        if isinstance(item, dict | list) and item:
            lines += [label, outline(item, indent + "  ")]
        else:
            lines.append(f"{label} {'-' if item in (None, [], {}) else field(item)}")
    return "\n".join(lines)


def purge(result: dict[str, Any]) -> str:
    verb = "would remove" if result["dry_run"] else "removed"
    removed = result["removed"].items()
    lines = [f"{state}: {verb} {counted(len(folders), 'record folder')}" for state, folders in removed]
    lines += [f"  {folder}" for folders in result["removed"].values() for folder in folders]
    return "\n".join(lines)


def reindex(result: dict[str, Any]) -> str:
    return f"indexed {counted(result['records'], 'record')} from {State.PROCESSED}/ and {State.DUPLICATES}/"


def status(report: Report) -> str:
    index = report["index"]
    reached = {True: ", reachable", False: ", NOT reachable"}.get(index.get("reachable"), "")
    nodes = f"; VMs: {', '.join(index['nodes'])}" if index.get("nodes") else ""
    lines = [f"node:           {report['node']}", f"index:          {index['where']}{reached}{nodes}"]
    lines.append("state        count")
    lines += [f"{state:<12} {count}" for state, count in report["counts"].items()]
    lines.append(f"oldest waiting: {report['oldest_waiting_seconds']:.0f}s")
    lines.append(f"last processed: {report['last_processed_at'] or 'never'}")
    lines.append(f"free space:     {report['free_bytes'] / 2**30:.1f} GiB")
    lines += report.lines
    if report["failures"]:
        lines.append("failures:")
        lines += [f"  {count:>5}  {reason}" for reason, count in report["failures"].items()]
    lines.append("attention: " + ("; ".join(report["attention"]) or "none"))
    return "\n".join(lines)


def resend(result: dict[str, Any]) -> str:
    matched, listed = result["matched"], result["notices"]
    lines = [f"{counted(matched, 'notice')} of {counted(result['postbacks'], 'postback')} match"]
    if result["dry_run"]:
        lines.append("dry run: nothing was queued; the webhooks would be:")
    else:
        done = f"queued {counted(result['queued'], 'webhook')} in {result['outbox']}/"
        if result["redelivered"]:
            done += f", {result['redelivered']} of them parked ones put back"
        if result["waiting_already"]:
            done += f"; {result['waiting_already']} waiting there already"
        lines.append(done)
        every = f"every {result['rescan_seconds']:g} s"
        lines.append(f"the running worker sends them at its next rescan of {result['outbox']}/ ({every})")
    if listed:
        lines.append(rows(listed))
    if matched > len(listed):
        lines.append(f"… and {matched - len(listed)} more")
    return "\n".join(lines)
