"""Reading the pages as a browser would, strictly: html5lib in strict mode, their text, and what they link to."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from xml.etree.ElementTree import Element

import html5lib

HTML = "{http://www.w3.org/1999/xhtml}"


def parse_strictly(page: Path) -> Element:
    """html5lib in strict mode raises on any parse error: the page is valid HTML."""
    return parse_bytes(page.read_bytes())


def parse_bytes(data: bytes) -> Element:
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=True)
    document: Element = parser.parse(data, transport_encoding="utf-8")
    return document


def text_of(document: Element) -> str:
    return "".join(document.itertext())


def shown_text(page: Path) -> str:
    """A page's text, its whitespace runs as single spaces."""
    return " ".join(text_of(parse_strictly(page)).split())


def links_of(page: Path) -> set[str]:
    return {e.attrib["href"] for e in parse_strictly(page).iter(f"{HTML}a")}


def assert_inert(document: Element) -> None:
    """No script, no handler, no remote or scripted link: only relative paths inside the spool."""
    for element in document.iter():
        tag = str(element.tag).removeprefix(HTML)
        assert tag not in ("script", "iframe", "object", "embed", "base", "form", "link", "meta") or (
            tag == "meta" and "http-equiv" not in element.attrib
        ), tag
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on"), (tag, name, value)
            if name in ("href", "src", "action", "formaction", "poster", "srcset"):
                parts = urllib.parse.urlsplit(value)
                assert (parts.scheme, parts.netloc) == ("", ""), (tag, name, value)
                assert not value.startswith(("/", "\\")), (tag, name, value)
