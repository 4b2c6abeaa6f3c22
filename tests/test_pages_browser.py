"""The pages in a real browser (Debian's chromium, headless, via its chromedriver) through the shipped browse site,
and through scripts/run-local's page server (nginx, or the same rules in Python).

The spool is filed by the real worker with media from a local origin; nginx serves it with the shipped config
and its CSP. The test asserts the pictures decoded, that the browser logged no CSP violation nor any error,
and saves the screenshots the README shows (docs/screenshots/).
"""

from __future__ import annotations

import functools
import http.client
import http.server
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from mospool.store import Spool
from tests.local_run import run_local
from tests.nginx_stack import REPO, browse_site
from tests.origin import Origin
from tests.pages_spool import SCRIPT, Filed, fill
from tests.servers import free_port

pytestmark = pytest.mark.slow  # chromium and nginx

TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")  # how a record page shows a time
CLOCK = re.compile(r"\d\d:\d\d:\d\d")  # how a day page does
# The line boxes the text of each row's kind cell takes, as laid out.
LINES_OF_EACH_KIND_CELL = (
    "return Array.from(document.querySelectorAll('tbody tr'), tr => {"
    " const range = document.createRange(); range.selectNodeContents(tr.children[1]);"
    " return range.getClientRects().length; })"
)
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "docs" / "screenshots"
CANARY = (
    "<!DOCTYPE html><html lang=en><head><title>canary</title></head><body>"
    '<img src="http://127.0.0.2:9/remote.png" alt=""><script>document.title = "ran"</script></body></html>'
)


# Injected by the browser into an isolated world before the page's own content (the page has no script, and
# its sandbox would not run one): each CSP violation is noted on the shared DOM, where execute_script reads it.
LISTEN_FOR_VIOLATIONS = (
    "document.addEventListener('securitypolicyviolation', e => {"
    " const root = document.documentElement;"
    " root.dataset.cspViolations = (root.dataset.cspViolations || '') + e.violatedDirective + ' ' + e.blockedURI + '\\n';"
    "});"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Spool, Filed]]:
    root = tmp_path_factory.mktemp("browse")
    spool_root = root / "spool"
    with Origin() as origin:
        ids = fill(spool_root, origin)
    canary = spool_root / "processed" / "2000-01-01"
    canary.mkdir()
    (canary / "canary.html").write_text(CANARY)
    with browse_site(root / "nginx", spool_root, (free_port(), free_port(), free_port())) as port:
        yield f"http://127.0.0.1:{port}", Spool(spool_root), ids


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="mospool-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        f"--user-data-dir={profile}", "--window-size=1100,1250", "--lang=en-US",
    ):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": LISTEN_FOR_VIOLATIONS, "worldName": "csp-check"}
    )
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def visit(driver: webdriver.Chrome, url: str) -> list[dict[str, Any]]:
    """Load a page, let every image settle, and return what the browser logged while doing so."""
    browser_log(driver)  # drop what earlier pages logged
    driver.get(url)
    driver.execute_script(
        "return Promise.all(Array.from(document.images, i => i.decode().catch(() => null)))"
    )
    return browser_log(driver)


def browser_log(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Console messages and CSP reports since the last call (goog:loggingPrefs browser ALL)."""
    logged: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return logged


def decoded_widths(driver: webdriver.Chrome) -> list[int]:
    widths: list[int] = driver.execute_script("return Array.from(document.images, i => i.naturalWidth)")
    return widths


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    """The whole page (up to 2,000 px high), for the README."""
    driver.set_window_size(1100, 200)  # shorter than any page, so the page's height is its content's
    height: int = driver.execute_script(
        "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"
    )
    driver.set_window_size(1100, min(height, 2200))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / name))
    driver.set_window_size(1100, 1250)


def problems(logged: list[dict[str, Any]]) -> list[str]:
    return [entry["message"] for entry in logged if entry["level"] in ("SEVERE", "WARNING")]


def violations(driver: webdriver.Chrome) -> list[str]:
    found: str | None = driver.execute_script("return document.documentElement.dataset.cspViolations")
    return (found or "").splitlines()


def test_the_csp_check_sees_a_violation_when_there_is_one(
    site: tuple[str, Spool, Filed], browser: webdriver.Chrome
) -> None:
    base, _, _ = site
    logged = visit(browser, f"{base}/processed/2000-01-01/canary.html")
    messages = " ".join(problems(logged))
    assert "Content Security Policy" in messages, logged
    assert any("img-src http://127.0.0.2:9/remote.png" in v for v in violations(browser)), (
        violations(browser),
        logged,
    )
    assert browser.title == "canary"  # the script did not run


def test_a_record_page_shows_its_pictures_under_the_shipped_csp(
    site: tuple[str, Spool, Filed], browser: webdriver.Chrome
) -> None:
    base, spool, ids = site
    folder = spool.record_dir("processed", ids.mms).relative_to(spool.root)
    logged = visit(browser, f"{base}/{folder}/")
    assert problems(logged) == []
    assert violations(browser) == []
    assert decoded_widths(browser) == [320, 200]
    assert "The crack in my screen" in browser.page_source
    screenshot(browser, "record-page.png")


def test_a_status_record_page_reads_at_a_glance(
    site: tuple[str, Spool, Filed], browser: webdriver.Chrome
) -> None:
    base, spool, ids = site
    folder = spool.record_dir("processed", ids.status).relative_to(spool.root)
    logged = visit(browser, f"{base}/{folder}/")
    assert problems(logged) == []
    assert violations(browser) == []
    fields = dict(
        zip(
            [e.text for e in browser.find_elements("css selector", "section dt")],
            [e.text for e in browser.find_elements("css selector", "section dd")],
            strict=True,
        )
    )
    assert fields["status"] == "Message Sent"
    assert fields["status details"] == "Handset setting: mms with pass via xHTML"
    assert fields["MMS id"] == "39755"
    assert fields["Sinch timestamp"] == "2012-06-07 12:27:34 UTC"
    received = browser.find_element("css selector", "dl time")
    assert TIME.fullmatch(received.text), received.text
    assert received.get_attribute("title") == received.get_attribute("datetime")
    assert str(received.get_attribute("datetime")).startswith(received.text[:10])  # exact, as recorded
    screenshot(browser, "status-page.png")


def test_a_day_page_shows_previews_and_leads_to_the_record(
    site: tuple[str, Spool, Filed], browser: webdriver.Chrome
) -> None:
    base, spool, ids = site
    day = spool.record_dir("processed", ids.mms).parent.relative_to(spool.root)
    logged = visit(browser, f"{base}/{day}/")
    assert problems(logged) == []
    assert violations(browser) == []
    widths = decoded_widths(browser)
    assert len(widths) == 2 and all(width > 0 for width in widths)  # the MMS and the hostile one
    times = browser.find_elements("css selector", "tbody time")
    assert times and all(CLOCK.fullmatch(t.text) and t.get_attribute("title") for t in times)
    lines: list[int] = browser.execute_script(LINES_OF_EACH_KIND_CELL)
    assert lines and set(lines) == {1}, lines  # "delivery status" on one line, never cut mid-word
    status = browser.find_element("css selector", f'a[href="{ids.status}/index.html"]').find_element(
        "xpath", "ancestor::tr"
    )
    assert "Message Sent: Handset setting" in status.text and "(no text)" not in status.text
    screenshot(browser, "day-page.png")
    link = browser.find_element("css selector", f'a[href="{ids.mms}/index.html"]')
    link.click()
    assert browser.current_url == f"{base}/{day}/{ids.mms}/index.html"
    assert decoded_widths(browser) == [320, 200]


def test_hostile_pages_run_nothing_in_the_browser(
    site: tuple[str, Spool, Filed], browser: webdriver.Chrome
) -> None:
    base, spool, ids = site
    for state, postback_id in (
        ("processed", ids.hostile),
        ("failed", ids.javascript_media),
        ("failed", ids.unreadable),
    ):
        folder = spool.record_dir(state, postback_id).relative_to(spool.root)
        logged = visit(browser, f"{base}/{folder}/index.html")
        assert problems(logged) == [], (state, logged)
        assert violations(browser) == []
        assert browser.execute_script("return document.scripts.length") == 0
        assert browser.execute_script("return typeof window.alertCalled") == "undefined"
    folder = spool.record_dir("processed", ids.hostile).relative_to(spool.root)
    visit(browser, f"{base}/{folder}/index.html")
    assert SCRIPT in browser.find_element("css selector", "h3 + pre").text


def test_the_root_page_is_served_and_the_rest_of_the_spool_is_not(
    site: tuple[str, Spool, Filed], browser: webdriver.Chrome
) -> None:
    base, _, _ = site
    logged = visit(browser, f"{base}/")
    assert problems(logged) == []
    assert violations(browser) == []
    assert browser.find_element("css selector", "h1").text.startswith("mo-spool on ")  # this VM's name
    for hidden in ("index.sqlite3", "incoming/", "work/", "tmp/", "deferred/", ".index.html.tmp"):
        browser.get(f"{base}/{hidden}")
        assert "404" in browser.title or "404" in browser.page_source, hidden


# --- scripts/run-local's page server, with a postback whose body is XHTML with a script


def xhtml_with_script(beacon: Origin) -> bytes:
    """A body whose script, if it ran, would call ``beacon`` (a local server that records every request)."""
    call = beacon.url("")
    return (
        '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>postback</title></head>'
        f'<body><p>hello</p><script>document.title = "ran"; fetch("{call}/fetch");'
        f' new Image().src = "{call}/img";</script></body></html>'
    ).encode()


@pytest.mark.parametrize("pages_server", ["", "python"], ids=["nginx", "python"])
def test_run_local_serves_an_xhtml_body_that_runs_nothing(
    tmp_path: Path, browser: webdriver.Chrome, pages_server: str
) -> None:
    with Origin() as beacon, run_local(tmp_path, pages_server) as local:
        port, pages, spool = local.port, local.pages, local.spool
        status = post(port, xhtml_with_script(beacon), "application/xml")
        assert status == 200
        deadline = time.monotonic() + 30
        while not list(spool.glob("failed/*/*/body.xml")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (body,) = spool.glob("failed/*/*/body.xml")  # not a postback: failed at parse, kept whole
        record = body.parent.relative_to(spool)
        visit(browser, f"http://127.0.0.1:{pages}/{record}/")
        browser.find_element("css selector", 'a[href="body.xml"]').click()
        time.sleep(1)  # what a script would have done, it would have done by now
        assert browser.current_url == f"http://127.0.0.1:{pages}/{record}/body.xml"
        assert browser.title != "ran"
        assert beacon.requests == []
        assert "hello" in browser.page_source  # the body was shown (as XML), not refused
        served_by = "nginx" if not pages_server else "Python"
        assert f"pages served by {served_by}" in local.log.read_text()
        assert local.stop() == 0, local.log.read_text()[-3000:]


def test_the_same_body_without_the_sites_headers_runs_its_script(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    """The check above can see a script run: served as a plain file server would, it runs."""
    with Origin() as beacon:
        (tmp_path / "body.xml").write_bytes(xhtml_with_script(beacon))
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            browser.get(f"http://127.0.0.1:{server.server_address[1]}/body.xml")
            deadline = time.monotonic() + 10
            while not beacon.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            assert browser.title == "ran"
            assert beacon.requests
        finally:
            server.shutdown()
            server.server_close()


def post(port: int, body: bytes, content_type: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/postback", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
