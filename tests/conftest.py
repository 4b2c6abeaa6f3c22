"""Fixtures shared by the test modules: the local media origin, the webhook application, a spool and a worker.

The inner loop is `scripts/test -m "not slow"`, under a minute: it leaves out the tests marked slow, those that
start gunicorn, nginx, chromium or the worker as a process, mount a loop device or a tmpfs, or install Debian
with debootstrap. `scripts/test` (what CI runs) runs them all. Postback bodies and publish() are in
tests/build.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import mospool.outputs  # noqa: F401 (each output registers its config.ini section)
from mospool.config import IndexSettings, Settings
from mospool.filer import Output
from mospool.store import Spool
from mospool.worker import Worker
from tests.build import LOCAL_MEDIA
from tests.origin import Origin
from tests.pages_spool import Filed, fill
from tests.pg import Cluster
from tests.webhook_app import App


@pytest.fixture
def origin() -> Iterator[Origin]:
    """Sinch's content servers, played on 127.0.0.1 over HTTP: script each path with origin.serve()."""
    with Origin() as server:
        yield server


@pytest.fixture
def app() -> Iterator[App]:
    """The business's application taking webhooks, verifying each; it accepts everything unless scripted."""
    with App() as server:
        yield server


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    """An empty spool at tmp_path/spool, where the worker fixtures file too."""
    spool = Spool(tmp_path / "spool")
    spool.create()
    return spool


@pytest.fixture(scope="module")
def filed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Spool, Filed]]:
    """The pages suites' spool: every kind of record tests/pages_spool.py files, once per test module."""
    root = tmp_path_factory.mktemp("pages") / "spool"
    with Origin() as origin:
        ids = fill(root, origin)
    yield Spool(root), ids


@pytest.fixture
def make_worker(tmp_path: Path) -> Callable[..., Worker]:
    """make_worker(outputs=None, **sections): a Worker on tmp_path/spool with the given settings sections
    (Settings.for_spool's), the rest default but for media: fetched from 127.0.0.1 too (tests/build.py's
    LOCAL_MEDIA) unless media= says otherwise. The outputs default to the configured ones (pages)."""

    def make(outputs: Sequence[Output] | None = None, **sections: Any) -> Worker:
        sections.setdefault("media", LOCAL_MEDIA)
        return Worker(Settings.for_spool(tmp_path / "spool", **sections), outputs)

    return make


@pytest.fixture
def worker(make_worker: Callable[..., Worker]) -> Worker:
    return make_worker()


# --- the index's two backends


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the whole run (tests/pg.py), started by the first test that asks."""
    cluster = Cluster().init()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg(pg_cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, running again after the test whatever it stopped."""
    yield pg_cluster
    if not pg_cluster.running():
        pg_cluster.start()


@pytest.fixture
def pg_url(pg: Cluster) -> Iterator[str]:
    """An index URL on a fresh, empty schema of the test cluster."""
    url = pg.schema()
    yield url
    pg.drop_schema(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def index_settings(request: pytest.FixtureRequest) -> IndexSettings:
    """Each backend in turn: SQLite in the spool, then a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return IndexSettings()
    return IndexSettings(url=request.getfixturevalue("pg_url"))


@pytest.fixture
def indexed_worker(make_worker: Callable[..., Worker], index_settings: IndexSettings) -> Iterator[Worker]:
    """The worker fixture on each backend of the index in turn."""
    worker = make_worker(index=index_settings)
    yield worker
    worker.close()
