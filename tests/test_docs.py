"""The README and docs/*.md: every internal link resolves, the README stays short and starts with its commands."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tests.servers import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
INLINE_CODE = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)*?)\1", re.S)  # may span lines, not paragraphs


def prose(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (a shell `# comment` is not a heading, `[x](y)` not a link)."""
    lines: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
        else:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation but `-` and `_` dropped, spaces to `-`."""
    pieces = re.split(r"(`+.*?`+)", INLINE_LINK.sub(r"\1", heading))
    text = "".join(
        piece.strip("`") if piece.startswith("`") else re.sub(r"[*]|(?<!\w)_+|_+(?!\w)", "", piece)
        for piece in pieces  # emphasis markers go, a code span's text stays as written
    )
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page, a repeated one numbered `-1`, `-2`, … as GitHub does."""
    seen: Counter[str] = Counter()
    found: set[str] = set()
    for line in prose(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def links(page: Path) -> list[str]:
    """The targets of the page's Markdown links and images, but those to the web (http, https, mailto)."""
    text = INLINE_CODE.sub("", "\n".join(prose(page.read_text())))  # a link's text may span lines
    return [target for target in LINK.findall(text) if not re.match(r"(https?|mailto):", target)]


def broken(page: Path, root: Path = REPO) -> list[str]:
    """What is wrong with each of the page's links: no such file, outside `root`, or no such heading."""
    problems: list[str] = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page.resolve()
        if not destination.exists():
            problems.append(f"{target}: no file {destination}")
        elif root.resolve() not in (destination, *destination.parents):
            problems.append(f"{target}: outside the repository")
        elif anchor and (destination.suffix != ".md" or anchor not in anchors(destination)):
            problems.append(f"{target}: no heading #{anchor} in {destination.name}")
    return problems


def test_the_docs_exist() -> None:
    assert DOCS, "no docs/*.md"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_link_resolves(page: Path) -> None:
    assert broken(page) == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    assert [page.name for page in DOCS if page.resolve() not in linked] == []


def test_the_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) < 200


def test_the_readme_starts_with_its_two_commands() -> None:
    text = README.read_text()
    assert text.startswith("# mo-spool\n\n```sh\n")
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split()[0] for line in first_block.splitlines() if line and not line[0].isspace()]
    assert commands == ["scripts/run-local", "scripts/test"]


def test_anchors_follow_githubs_rules(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        '# The spool\n## What "200" means\n### message.json\n#### Webhooks (`[forward]`)\n'
        "## Files\n## Files\n```sh\n# a shell comment\n```\n## Files\n## `max_body_bytes` and _more_\n## `__init__`\n"
    )
    assert anchors(page) == {
        "the-spool",
        "what-200-means",
        "messagejson",
        "webhooks-forward",
        "files",
        "files-1",
        "files-2",
        "max_body_bytes-and-more",
        "__init__",
    }


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n## Part two\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#part-two) [ok](#here) `[not a link](nowhere.md)`\n# Here\n"
        "[gone](missing.md) [no anchor](other.md#part-three) [no anchor\nhere](#there) `a code\nspan [x](y.md)`\n"
        "```\n[in code](nowhere.md)\n```\n"
    )
    assert [problem.split(":")[0] for problem in broken(page, root=tmp_path)] == [
        "missing.md",
        "other.md#part-three",
        "#there",
    ]
