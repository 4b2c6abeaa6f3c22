"""The store (mospool/store/) is the one owner of the spool's layout: no other module spells its names.

Every string literal in the project's code outside the store (docstrings and comments aside) is checked
against the store's own names: a record folder's files, the spool file suffixes and the index file anywhere
in a literal; a folder (a state, the outboxes, media/) written as a path ("incoming/"); and a bare folder or
file name used to build a path (``root / "processed"``, ``folder.glob("body.*")``). A name may be used
through the store's constants and functions; it may not be written again by hand.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mospool.store import layout, outbox, stale
from tests.servers import REPO

FOLDERS = {str(state) for state in layout.State} | {
    outbox.OUTBOX,
    outbox.UNDELIVERED,
    layout.MEDIA,
    stale.STALE_PAGES,
}
FILES = {
    layout.REQUEST, layout.MESSAGE, layout.ERROR, layout.DUPLICATE, layout.RETRY, layout.SPOOL_FILE,
    layout.PAGE, layout.INDEX_FILE, layout.SUFFIX, outbox.ENTRY_SUFFIX, outbox.SCHEDULE_SUFFIX,
}  # fmt: skip
WORDS = FOLDERS | {layout.BODY_STEM, "message"}  # name a folder or file when used to build a path
# A folder name used as a path: "incoming/", "/processed", "failed/2026-…".
AS_PATH = re.compile(rf"(?<![\w.-])({'|'.join(sorted(FOLDERS))})/|/({'|'.join(sorted(FOLDERS))})\b")
PATH_CALLS = {"Path", "PurePath", "joinpath", "glob", "rglob", "with_name", "join", "open"}


def code_files() -> list[Path]:
    store = REPO / "mospool" / "store"
    modules = [p for p in (REPO / "mospool").rglob("*.py") if store not in p.parents]
    return sorted([*modules, REPO / "app.py", REPO / "spool_worker.py", REPO / "deploy" / "gunicorn.conf.py"])


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes: prose about the layout is welcome."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def in_path_context(tree: ast.AST) -> set[int]:
    """The ids of the literals used as a path: an operand of ``/``, or an argument of Path(), glob() …"""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found |= {id(node.left), id(node.right)}
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in PATH_CALLS:
                found |= {id(arg) for arg in node.args}
    return found


def layout_names(text: str, as_path: bool) -> list[str]:
    """The layout names a literal spells (see the module docstring)."""
    found = [name for name in FILES if name in text]
    found += [match.group(0) for match in AS_PATH.finditer(text)]
    if as_path:
        found += [name for name in WORDS if name == text or text.startswith((f"{name}.", f"{name}-"))]
    return found


def spelled(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, literal, the layout names it spells) for every literal of a file that spells one."""
    tree = ast.parse(path.read_text(), str(path))
    skip, as_path = docstrings(tree), in_path_context(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            names = layout_names(node.value, id(node) in as_path)
            if names:
                found.append((node.lineno, node.value, names))
    return found


@pytest.mark.parametrize("path", code_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_outside_the_store_spells_a_layout_name(path: Path) -> None:
    relative = str(path.relative_to(REPO))
    found = [f"{relative}:{line}: {text!r} spells {names}" for line, text, names in spelled(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("text", "as_path", "spells"),
    [
        ("processed", True, True),  # root / "processed"
        ("body.*", True, True),  # folder.glob("body.*")
        ("message-*.json", True, True),
        ("back to incoming/ for a later pass", False, True),
        ("/failed", False, True),
        ("see error.json", False, True),
        ("x.postback", False, True),
        ("processed", False, False),  # an outcome, not a folder
        ("processed_days", True, False),
        ("3 media", False, False),
        ("state = 'processed'", False, False),
    ],
)
def test_the_check_sees_a_spelled_name(text: str, as_path: bool, spells: bool) -> None:
    assert bool(layout_names(text, as_path)) is spells


def test_the_check_reads_paths_built_by_hand(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'import pathlib\nroot = pathlib.Path(".")\nx = root / "failed"\ny = root.glob("message-*.json")\n'
        'z = {"failed": 1, "media": []}\n'
    )
    assert [line for line, _, _ in spelled(sample)] == [3, 4]
