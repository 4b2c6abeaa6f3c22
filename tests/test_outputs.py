"""An output is one file: a JSON-lines output, defined here and nowhere else, joins the registry and works.

It appends each filed message to a file through the generic delivery engine (durable outbox of its own,
retries, parking), and shows in config.ini, `mospool status`, the metrics and the front page, with no other
module of the project touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mospool import retry
from mospool.cli import main as cli_main
from mospool.config import ConfigError, Section, load_settings
from mospool.filer import Batch
from mospool.outputs import BaseOutput, Context, Spec, StatusPart, register, unregister
from mospool.outputs.delivery import Delivery
from mospool.outputs.destination import Answer, Route, delivery_status
from mospool.store import Entry, Folder, Spool, State
from mospool.store.outbox import entry_name
from mospool.values import positive_int
from mospool.worker import Worker
from tests.build import SMS_MO, publish

DESTINATION = "jsonl"


@dataclasses.dataclass(frozen=True)
class JsonLinesSettings:
    path: str = ""
    attempts: int = 3
    retry_base_seconds: float = 60.0
    give_up_after_seconds: float = 3600.0


class AppendLine:
    """The transport: one line per message, appended; a missing folder is a transient failure."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, entry: Entry) -> Answer:
        try:
            with self.path.open("ab") as out:
                out.write(entry.body + b"\n")
        except OSError as exc:
            return Answer(False, str(exc), transient=True)
        return Answer(True, "appended")

    def close(self) -> None:
        pass


class JsonLines(BaseOutput):
    def __init__(self, spool: Spool, delivery: Delivery) -> None:
        self.spool = spool
        self.delivery = delivery

    def prepare(self, folder: Folder, batch: Batch) -> None:
        record = self.spool.records.relative(folder.path)
        entries = (
            Entry(
                f"line_{folder.spool_id}_{n}",
                folder.spool_id,
                n,
                folder.state,
                json.dumps(m).encode(),
                record,
            )
            for n, m in enumerate(folder.messages, 1)
        )
        self.delivery.enqueue(batch, entries)

    def published(self, folders: Sequence[Folder]) -> None:
        self.delivery.hint(entry_name(f.spool_id, n) for f in folders for n in range(1, len(f.messages) + 1))

    def tick(self) -> None:
        self.delivery.tick()

    def close(self) -> None:
        self.delivery.close()


def build(settings: JsonLinesSettings, context: Context) -> JsonLines:
    route = Route(
        name=DESTINATION,
        address=settings.path,
        outbox=context.spool.outbox(DESTINATION),
        transport=AppendLine(Path(settings.path)),
        policy=retry.Policy.of(settings),
        concurrency=1,
        states=(State.PROCESSED,),
    )
    return JsonLines(context.spool, Delivery(route, context.spool, context.metrics))


def status(settings: JsonLinesSettings, spool: Spool) -> StatusPart:
    return delivery_status("lines", spool.outbox(DESTINATION), one="line")


SPEC = Spec(
    Section(DESTINATION, JsonLinesSettings, {"path": str, "attempts": positive_int}),
    build,
    enabled=lambda settings: bool(settings.path),
    status=status,
    destination=DESTINATION,
)


@pytest.fixture
def registered() -> Iterator[Spec]:
    yield register(SPEC)
    unregister(SPEC.name)


def config(tmp_path: Path, lines: Path) -> Path:
    path = tmp_path / "config.ini"
    metrics = tmp_path / "metrics.prom"
    path.write_text(
        f"[spool]\ndir = {tmp_path / 'spool'}\n[monitor]\nmetrics_textfile = {metrics}\n"
        f"[jsonl]\npath = {lines}\n"
    )
    return path


def wait_for_lines(path: Path, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = path.read_text().splitlines() if path.exists() else []
        if len(found) >= count:
            return [json.loads(line) for line in found]
        time.sleep(0.05)
    raise AssertionError(f"{count} lines never reached {path}")


def test_an_output_defined_in_one_file_is_configured_filed_delivered_and_shown(
    tmp_path: Path, registered: Spec, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "lines.jsonl"
    settings = load_settings(config(tmp_path, lines))
    assert settings.output(registered.section) == JsonLinesSettings(path=str(lines))
    worker = Worker(settings)
    ids = [publish(worker.spool, SMS_MO.replace(b"sms-1", f"sms-{n}".encode())) for n in range(3)]
    assert worker.drain() == 3
    try:
        delivered = wait_for_lines(lines, 3)
        assert sorted(str(line["spool_id"]) for line in delivered) == sorted(ids)
        assert all(line["text"] == "hello" for line in delivered)
        deadline = time.monotonic() + 20
        while os.listdir(worker.spool.outbox(DESTINATION).pending) and time.monotonic() < deadline:
            time.sleep(0.05)  # delivered entries are removed by a thread of their own
        assert os.listdir(worker.spool.outbox(DESTINATION).pending) == []
        worker.write_metrics()
    finally:
        worker.close()
    metrics = (tmp_path / "metrics.prom").read_text()
    assert 'mospool_deliveries_total{destination="jsonl",outcome="delivered"} 3.0' in metrics
    assert cli_main(["--config", str(config(tmp_path, lines)), "--json", "status"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["lines"] == {"outbox": 0, "undelivered": 0}
    front = (worker.spool.front_page).read_text()
    assert "<h2>Lines</h2>" in front and " in outbox/jsonl/, 0 undelivered" in front  # as the drain left it


def test_a_destination_that_fails_retries_then_parks_and_status_says_so(
    tmp_path: Path, registered: Spec, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "no-such-folder" / "lines.jsonl"
    path = config(tmp_path, lines)
    worker = Worker(load_settings(path))
    publish(worker.spool, SMS_MO)
    worker.drain()
    (jsonl,) = [o for o in worker.filer.outputs if isinstance(o, JsonLines)]
    jsonl.delivery.close()  # the senders the drain started (they may have tried once): the rest by hand
    far = time.time() + 10 * 365 * 86400
    outcomes = [jsonl.delivery.deliver_due(now=far) for _ in range(3)]
    assert {"undelivered": 1} in outcomes and {"retry": 1} in outcomes
    outbox = worker.spool.outbox(DESTINATION)
    (parked,) = outbox.names(outbox.undelivered)
    assert outbox.schedule(parked, outbox.undelivered)["attempts"] == 3
    worker.close()
    assert cli_main(["--config", str(path), "status"]) == 1
    text = capsys.readouterr().out
    assert "lines:          0 in outbox/jsonl/, 1 undelivered" in text
    assert "1 line in undelivered/jsonl/ (mospool list undelivered/jsonl; mospool redeliver" in text
    assert cli_main(["--config", str(path), "redeliver", "--all"]) == 0
    assert len(list(worker.spool.outbox(DESTINATION).names(worker.spool.outbox(DESTINATION).pending))) == 1


def test_without_the_output_its_section_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[jsonl\]"):
        load_settings(config(tmp_path, tmp_path / "lines.jsonl"))
