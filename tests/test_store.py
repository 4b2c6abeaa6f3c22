"""The store's look-ups and moves by key, on real spools: what the CLI, the index and the pages ask of it."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from mospool.outputs.webhook_client import sign
from mospool.parse import parse_postback
from mospool.store import Entry, NotFound, NotMovable, Outbox, Spool, State, encode, new_id
from mospool.store.outbox import ENTRY_SUFFIX, LEGACY_SUFFIX
from mospool.store.record import json_bytes
from mospool.store.records import failed_only
from tests.build import BATCH, JPEG, SMS_MO, STATUS_XML


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.create()
    return spool


def filed(spool: Spool, state: State, when: dt.datetime, error: dict[str, str] | None = None) -> Path:
    """A record folder as the worker leaves it: request, body, and error.json for a failed one."""
    postback_id = new_id(when)
    folder = spool.record_dir(state, postback_id)
    folder.mkdir(parents=True)
    (folder / "request.json").write_text(json.dumps({"received_at": when.isoformat()}))
    (folder / "body.json").write_bytes(b'{"origin":"SMS_MO"}')
    if error is not None:
        (folder / "error.json").write_text(json.dumps(error))
    return folder


DAY1 = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)


def test_one_walker_sees_record_folders_not_pages_nor_stray_files(spool: Spool) -> None:
    first, second = filed(spool, State.PROCESSED, DAY1), filed(spool, State.PROCESSED, DAY2)
    (spool.processed / "2026-11-02" / "index.html").write_text("a day page")
    (spool.processed / "not-a-day").mkdir()
    assert spool.records.days(State.PROCESSED) == ["2026-11-01", "2026-11-02"]
    assert list(spool.records.folders(State.PROCESSED)) == [first, second]
    assert list(spool.records.folders(State.PROCESSED, since=DAY2.date())) == [second]
    assert spool.records.count(State.PROCESSED) == 2


def test_find_by_id_by_unique_prefix_and_says_why_not(spool: Spool) -> None:
    folder = filed(spool, State.FAILED, DAY1, {"stage": "parse", "error": "bad"})
    other = filed(spool, State.FAILED, DAY1 + dt.timedelta(seconds=1))
    assert spool.records.find(folder.name).path == folder
    assert spool.records.find(folder.name[:22]).state is State.FAILED  # up to the microseconds: unique
    with pytest.raises(NotFound, match="is the start of 2 ids"):
        spool.records.find("20261101T12")
    with pytest.raises(NotFound, match="no postback with id nope"):
        spool.records.find("nope")
    waiting = spool.publish({"received_at": DAY2.isoformat()}, b"x")
    assert spool.records.find(waiting).state is State.INCOMING
    assert other != folder


def test_requeue_rebuilds_the_spool_file_with_its_history(spool: Spool) -> None:
    folder = filed(spool, State.FAILED, DAY1, {"stage": "media", "error": "gone"})
    target = spool.records.requeue(failed_only(spool.records.find(folder.name), folder.name, "retried"))
    assert target.parent == spool.incoming and not folder.exists()
    postback = spool.read(target)
    assert postback.body == b'{"origin":"SMS_MO"}'
    assert postback.meta["previous_failures"] == [{"stage": "media", "error": "gone"}]


def test_only_failed_records_move_and_dismiss_keeps_the_day(spool: Spool) -> None:
    processed = filed(spool, State.PROCESSED, DAY1)
    with pytest.raises(NotMovable, match="only failed postbacks can be dismissed"):
        failed_only(spool.records.find(processed.name), processed.name, "dismissed")
    failed = filed(spool, State.FAILED, DAY1, {"stage": "parse", "error": "bad"})
    moved = spool.records.dismiss(failed)
    assert moved == spool.root / "dismissed" / "2026-11-01" / failed.name and moved.is_dir()
    with pytest.raises(NotMovable, match=r"no request\.json and body"):
        empty = spool.record_dir(State.FAILED, new_id(DAY1))
        empty.mkdir(parents=True)
        spool.records.requeue(empty)


def test_purge_removes_whole_days_before_the_cutoff(spool: Spool) -> None:
    filed(spool, State.DUPLICATES, DAY1)
    kept = filed(spool, State.DUPLICATES, DAY2)
    old = spool.records.days_before(State.DUPLICATES, DAY2.date())
    assert old == ["2026-11-01"]
    spool.records.purge_day(State.DUPLICATES, old[0])
    assert list(spool.records.folders(State.DUPLICATES)) == [kept]


def test_an_entry_holds_the_exact_bytes_and_a_damaged_one_is_refused(spool: Spool) -> None:
    outbox = spool.outbox("")
    outbox.create()
    body = b'{"text":"caf\xc3\xa9 \\u2028"}'
    entry = Entry("msg_x_001", "20261101T120000.000000Z-000000000000", 1, "processed", body, "processed/x")
    outbox.entry_path(entry.name).write_bytes(entry.to_bytes())
    assert outbox.read(entry.name) == entry
    outbox.entry_path(entry.name).write_bytes(entry.to_bytes()[:-1])
    with pytest.raises(ValueError, match="body length"):
        outbox.read(entry.name)


def test_entries_of_an_older_release_are_taken_over_whole(spool: Spool) -> None:
    """Before entries held the raw bytes, the body was a JSON string inside JSON (outbox/<name>.json)."""
    pending = spool.root / "outbox"
    pending.mkdir()
    spool_id = new_id(DAY1)
    legacy = {
        "webhook_id": f"msg_{spool_id}_001",
        "spool_id": spool_id,
        "position": 1,
        "state": "processed",
        "record": f"processed/2026-11-01/{spool_id}",
        "body": '{"text":"hé"}',
    }
    (pending / f"{spool_id}.001{LEGACY_SUFFIX}").write_text(json.dumps(legacy, indent=2))
    (pending / f"{spool_id}.002{LEGACY_SUFFIX}").write_text("{damaged")
    outbox = Outbox(spool.root)
    outbox.create()
    assert outbox.read(f"{spool_id}.001") == Entry(
        f"msg_{spool_id}_001", spool_id, 1, "processed", '{"text":"hé"}'.encode(), str(legacy["record"])
    )
    assert sorted(p.name for p in pending.iterdir()) == [
        f"{spool_id}.001{ENTRY_SUFFIX}",
        f"{spool_id}.002{LEGACY_SUFFIX}",  # left for a person: not an entry it can take over
    ]


def test_the_signature_is_the_standard_webhooks_one_on_the_exact_bytes() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"text":"héllo \\u2028 ✓"}'.encode()
    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0)  # verify() refuses an old timestamp
    ours = sign(Webhook(secret)._whsecret, "msg_1", int(stamp.timestamp()), body)
    assert ours == Webhook(secret).sign("msg_1", stamp, body.decode())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": ours,
    }
    Webhook(secret).verify(body, headers)  # raises if it does not hold


def test_a_spool_file_built_by_hand_reads_back(spool: Spool) -> None:
    (spool.incoming / "x.postback").write_bytes(encode({"body_bytes": 1}, b"x"))
    with pytest.raises(ValueError, match="checksum"):
        spool.read(spool.incoming / "x.postback")


def test_a_day_purged_while_the_worker_runs_is_made_again(spool: Spool) -> None:
    """The spool remembers the day folders it made; `purge` may remove one behind its back."""
    first = spool.build_dir(new_id(DAY1))
    assert spool.place(first, State.PROCESSED).is_dir()
    spool.records.purge_day(State.PROCESSED, "2026-11-01")
    again = spool.build_dir(new_id(DAY1))
    assert spool.place(again, State.PROCESSED).is_dir()


def test_record_json_is_byte_for_byte_what_json_dumps_writes() -> None:
    """message.json and the others are written by orjson, for speed: the bytes must not change."""
    samples: list[object] = [json.loads(SMS_MO), {"n": [1, None, True, {"a": []}, {}], "e": "", "x": 2**70}]
    for body, kind in ((SMS_MO, "application/json"), (BATCH, "text/xml"), (STATUS_XML, "text/xml")):
        samples += [record.to_message() for record in parse_postback(body, kind).records]
    rnd = random.Random(7)
    for _ in range(500):
        text = "".join(
            chr(rnd.choice([rnd.randrange(0x80), rnd.randrange(0x80, 0xD800), 0x2028])) for _ in range(30)
        )
        samples.append({"text": text, "controls": "\x00\x1b\x7f\u2029", "bytes": JPEG[:8].decode("latin-1")})
    for value in samples:
        assert json_bytes(value) == json.dumps(value, indent=2, ensure_ascii=False).encode() + b"\n"
