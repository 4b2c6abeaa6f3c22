"""The pure parser over sample postbacks (tests/postbacks/): every dialect, kind and hostile body."""

from __future__ import annotations

import contextlib
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mospool.parse import ParseError, Record, body_extension, fold, normalize_timestamp, parse_postback
from mospool.store.record import dedup_key

SAMPLES = Path(__file__).parent / "postbacks"
FORM = "application/x-www-form-urlencoded"
URL = "URL of Content Here"

# sample file -> (content type, format, expected fields of the first record)
GOOD: dict[str, tuple[str | None, str, dict[str, Any]]] = {
    "json_n401_seed.json": ("application/json", "json", {
        "kind": "mms_mo", "origin": "MMS_MO", "code": "N401", "sender": "17745550001", "to": "18885551234",
        "keyword": "INFO", "tracking_id": "mo123xyz", "operator_id": "310012", "subject": "Question",
        "timestamp": "2026-04-24T18:34:00+00:00", "copy_to": (),
        "media_urls": (
            "https://example.sinch.com/mo-content/file1.jpg", "https://example.sinch.com/mo-content/file2.txt",
        ),
    }),
    "json_group_copy_to_seed.json": ("application/json", "json", {
        "kind": "mms_mo", "tracking_id": "MMSMOabcd123", "keyword": None, "subject": None, "operator_id": None,
        "copy_to": tuple(f"100001234{n}" for n in (34, 33, 32, 31, 30, 29)),
        "timestamp": "2025-11-17T16:57:00.146690+00:00",
    }),
    "xml_lower_seed.xml": ("text/xml", "xml", {
        "kind": "mms_mo", "sender": "14082257140", "to": "28444", "keyword": "all",
        "tracking_id": "MMS_MO_iLnCRrL6", "operator_id": "31002", "subject": None,
        "timestamp": "2014-02-03T11:19:49-05:00", "media_urls": (URL, URL, URL),
    }),
    "xml_legacy_seed.xml": ("application/xml", "xml", {
        "kind": "mms_mo", "sender": "15552312102", "to": "86717", "keyword": "testoffer",
        "tracking_id": "MMS_MO_vp8Vsf2M", "operator_id": "0001650", "timestamp": "2011-09-28T15:25:30-04:00",
        "media_urls": ("...URL of Content Here...",) * 3,
    }),
    "xml_legacy_notification_seed.xml": ("text/xml", "xml", {
        "kind": "mms_mo", "sender": "13217949521", "to": "74700", "tracking_id": "MMS_MO_iLnCRrL6",
        "operator_id": "0001470", "media_urls": (URL, URL, URL),
    }),
    "xml_legacy_sms_mo.xml": ("text/xml", "xml", {
        "kind": "sms_mo", "text": "Hello there", "timestamp": "2011-09-28T15:25:30-04:00", "media_urls": (),
    }),
    "xml_legacy_batch.xml": ("text/xml", "xml", {"kind": "sms_mo", "tracking_id": "b-1", "text": "t1"}),
    "json_bom.json": ("application/json", "json", {"kind": "sms_mo", "text": "café", "tracking_id": "bom-1"}),
    "json_utf16.json": ("application/json", "json", {"kind": "sms_mo", "text": "日本", "tracking_id": "u16-1"}),
    "json_numbers.json": ("application/json", "json", {
        "sender": "17745550001", "to": "28444", "tracking_id": "123456789012345678901234567890",
        "operator_id": "310012", "media_urls": ("https://example.sinch.com/one.jpg",),
    }),
    "json_empty_fields.json": ("application/json", "json", {
        "keyword": None, "operator_id": None, "subject": None, "timestamp": None, "copy_to": (), "media_urls": (),
    }),
    "json_sms_mo.json": ("text/plain", "json", {
        "kind": "sms_mo", "text": "STOP please", "keyword": "STOP", "timestamp": "2026-04-24T18:34:00.500000-05:00",
    }),
    "json_mms_mt_n101.json": ("application/json", "json", {
        "kind": "status", "code": "N101", "status": "Delivered to handset", "timestamp": "2026-04-24T18:35:00+00:00",
    }),
    "xml_sms_mt_status.xml": ("text/xml", "xml", {"kind": "status", "code": "N102", "status": "Delivered"}),
    "json_savemms_n003.json": ("application/json", "json", {
        "kind": "status", "code": "N003", "tracking_id": "save-1", "status": "MMS saved and transcoded",
    }),
    "json_unknown_origin.json": ("application/json", "json", {"kind": "other", "origin": "SOMETHING_NEW"}),
    "xml_latin1.xml": ("text/xml", "xml", {
        "kind": "mms_mo", "subject": "Crème brûlée", "copy_to": ("15550004", "15550005"),
        "media_urls": ("https://example.sinch.com/a.jpg?x=1&y=2",), "tracking_id": "lat-1",
    }),
    "xml_mixed_case.xml": ("text/xml", "xml", {
        "tracking_id": "mix-1", "operator_id": "0042", "media_urls": ("https://example.sinch.com/m.png",),
    }),
    "form_mms_mo.txt": (FORM, "form", {
        "kind": "mms_mo", "tracking_id": "form-1", "operator_id": "0001", "copy_to": ("15550007", "15550008"),
        "media_urls": ("https://example.sinch.com/a.jpg", "https://example.sinch.com/b.txt"),
    }),
    "form_sms_mo.txt": (None, "form", {"kind": "sms_mo", "tracking_id": "form-2", "text": "hi there!"}),
    # Published Skycore/Sinch layouts (SMS MO, MT delivery, saveMMS, subscription and pass notices).
    "xml_sms_mo_n211.xml": ("text/xml", "xml", {
        "kind": "sms_mo", "code": "N211", "sender": "15552312102", "to": "86717", "text": "STOP",
        "tracking_id": "511XG-02294-192SA-482H8", "timestamp": "2011-09-28T17:31:02-04:00",
    }),
    "xml_mms_mo_subject.xml": ("text/xml", "xml", {
        "kind": "mms_mo", "subject": "Hello there", "tracking_id": "MMS_MO_iLnCRrL6", "media_urls": (URL, URL, URL),
    }),
    "xml_sms_mt_n201.xml": ("text/xml", "xml", {
        "kind": "status", "code": "N201", "status": "Message Sent", "from_mask": "MyBrand", "sender": "60856",
        "to": "16503333058", "tracking_id": "U01TXzgwNjc4", "operator_id": "0001470",
    }),
    "xml_sms_mt_n202.xml": ("text/xml", "xml", {
        "kind": "status", "code": "N202", "status": "Message Sent/Delivered", "from_mask": None,
        "timestamp": "2013-11-05T05:41:15-05:00",
    }),
    "xml_mms_mt_n101_binary.xml": ("text/xml", "xml", {
        "kind": "status", "code": "N101", "sent_as": "MMS", "mms_id": "39597", "status": "Message Sent",
        "status_details": None, "tracking_id": "TU1TXzU5Nzg3OQ==",
    }),
    "xml_mms_mt_n101_xhtml.xml": ("text/xml", "xml", {
        "kind": "status", "sent_as": "SMS", "mms_id": "39755", "status": "Message Sent",
        "status_details": "Handset setting: mms with pass via xHTML",
    }),
    "xml_mms_mt_n102_binary.xml": ("text/xml", "xml", {
        "kind": "status", "code": "N102", "status": "Message Sent/Delivered", "operator_id": "0001570",
    }),
    "xml_mms_mt_e101.xml": ("text/xml", "xml", {
        "kind": "status", "code": "E101", "status": "Message Failed",
        "status_details": "Error fetching dynamic content", "timestamp": None,
    }),
    "xml_savemms_e002.xml": ("text/xml", "xml", {"kind": "status", "code": "E002", "mms_id": "35674", "status": "E002"}),
    "xml_lower_n101_html.xml": ("text/xml", "xml", {
        "kind": "status", "sent_as": "SMS", "mms_id": "39755", "status": "Message Sent", "operator_id": "31004",
        "status_details": "Handset setting: mms with pass via HTML",
    }),
    "xml_lower_e102.xml": ("text/xml", "xml", {
        "kind": "status", "code": "E102", "status": "Message Sent/Rejected",
        "status_details": "Recipient blocked by mobile operator",
    }),
    "xml_lower_n501.xml": ("text/xml", "xml", {
        "kind": "status", "code": "N501", "status": "Message Sent", "status_details": None, "sent_as": "MMS",
    }),
    "xml_lower_e002.xml": ("text/xml", "xml", {"kind": "status", "code": "E002", "mms_id": "35674"}),
    "xml_sub_n301.xml": ("text/xml", "xml", {
        "kind": "other", "origin": "SUB", "code": "N301", "sender": "16501112222", "to": "123456",
        "tracking_id": None, "timestamp": "2014-07-02T14:32:23-04:00",
    }),
    "xml_sub_n302_xsi.xml": ("text/xml", "xml", {
        "kind": "other", "code": "N302", "sender": "16502424956", "to": None, "tracking_id": None,
    }),
    "xml_email_sub_n303.xml": ("text/xml", "xml", {"kind": "other", "code": "N303", "sender": "info@skycore.com"}),
    "xml_email_sub_n304.xml": ("text/xml", "xml", {"kind": "other", "code": "N304", "sender": "info@skycore.com"}),
    "xml_pass_n801.xml": ("text/xml", "xml", {
        "kind": "other", "origin": "GENERATE_PASS", "code": "N801", "timestamp": "2013-11-26T11:37:11-05:00",
    }),
    "json_mms_mt_n102_names.json": ("application/json", "json", {
        "kind": "status", "status": "Message Sent/Delivered", "status_details": "Delivered to handset",
        "mms_id": "39597", "sent_as": "MMS", "operator_name": "Verizon Wireless", "from_mask": "MyBrand",
        "client_reference": "order-8812",
    }),
    # The older layout: <NOTIFICATION ID CREATED> as the root, the fields inside <BODY>, no ORIGIN or CODE.
    "xml_notification_body.xml": ("text/xml", "xml", {
        "kind": "other", "origin": None, "code": None, "to": "16175550142", "tracking_id": "TU1TXzQ0NzEwOTM=",
        "timestamp": "2011-08-02T07:20:44-04:00", "mms_id": "28331", "operator_id": "0001470", "status": "Retrieved",
    }),
    "xml_notification_body_batch.xml": ("text/xml", "xml", {
        "kind": "status", "code": "N102", "to": "16175550143", "tracking_id": "TU1TXzQ0NzEwOTQ=",
        "status": "Delivered", "operator_id": "0001140",
    }),
    # XML sent inside a form field.
    "form_xml_field.txt": (FORM, "form-xml", {
        "kind": "sms_mo", "code": "N211", "tracking_id": "511XG-02294-192SA-482H8", "text": "STOP",
    }),
    "form_xml_lower.txt": (FORM, "form-xml", {
        "kind": "mms_mo", "tracking_id": "MMS_MO_iLnCRrL6", "operator_id": "31002", "media_urls": (URL, URL, URL),
    }),
    "form_xmldata.txt": (None, "form-xml", {
        "kind": "other", "to": "16175550142", "tracking_id": "TU1TXzQ0NzEwOTM=", "status": "Retrieved",
    }),
}  # fmt: skip

BAD = {
    "json_truncated.json": "unreadable body",
    "xml_truncated.xml": "malformed XML",
    "xml_xxe.xml": "DTD",
    "xml_billion_laughs.xml": "DTD",
    "xml_external_dtd.xml": "DTD",
    "html_page.html": "malformed XML",
    "json_empty_object.json": "no postback fields",
    "json_empty_list.json": "not an object",
    "json_string.json": "not an object",
    "binary.bin": "not JSON, XML or form-encoded",
    "json_invalid_utf8.json": "unreadable body",
    "json_no_postback_keys.json": "no postback fields",
    "plain_text.txt": "not JSON, XML or form-encoded",
    "form_xml_xxe.txt": "DTD",
    "form_xml_truncated.txt": "malformed XML",
}
CONTENT_TYPES = {
    ".json": "application/json", ".xml": "text/xml", ".html": "text/html", ".txt": "text/plain",
    ".bin": "application/octet-stream",
}  # fmt: skip


def sample(name: str) -> bytes:
    folder = "good" if name in GOOD else "bad"
    return (SAMPLES / folder / name).read_bytes()


def test_every_sample_file_is_covered() -> None:
    assert {p.name for p in (SAMPLES / "good").iterdir()} == set(GOOD)
    assert {p.name for p in (SAMPLES / "bad").iterdir()} == set(BAD)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_samples(name: str) -> None:
    content_type, fmt, expected = GOOD[name]
    parsed = parse_postback(sample(name), content_type)
    assert parsed.format == fmt
    record = parsed.records[0]
    assert {key: getattr(record, key) for key in expected} == expected
    assert record.fields, "the fields as sent are kept"


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_samples_raise_parse_error_naming_the_cause(name: str) -> None:
    with pytest.raises(ParseError, match=BAD[name]):
        parse_postback(sample(name), CONTENT_TYPES[Path(name).suffix])


def test_xxe_never_reads_the_file() -> None:
    with pytest.raises(ParseError) as caught:
        parse_postback(sample("xml_xxe.xml"), "text/xml")
    assert "root:" not in str(caught.value)


def test_message_shape_is_the_public_contract() -> None:
    message = parse_postback(sample("json_n401_seed.json"), "application/json").records[0].to_message()
    assert list(message) == [
        "kind", "origin", "code", "from", "to", "copy_to", "keyword", "tracking_id", "operator_id",
        "timestamp", "subject", "text", "status", "status_details", "mms_id", "sent_as", "operator_name",
        "from_mask", "client_reference", "media", "fields",
    ]  # fmt: skip
    assert message["media"][0] == {"url": "https://example.sinch.com/mo-content/file1.jpg"}
    assert message["fields"]["tracking-id"] == "mo123xyz"
    json.dumps(message)  # serializable as is


def test_batched_notifications_become_records_in_order() -> None:
    records = parse_postback(sample("xml_legacy_batch.xml"), "text/xml").records
    assert [(r.tracking_id, r.text) for r in records] == [("b-1", "t1"), ("b-2", "t2"), ("b-3", "t3")]


def test_json_list_is_a_batch() -> None:
    body = b'[{"origin":"SMS_MO","tracking-id":"a"},{"origin":"SMS_MO","tracking-id":"b"}]'
    assert [r.tracking_id for r in parse_postback(body, "application/json").records] == ["a", "b"]


def test_duplicated_xml_tags_first_wins_all_kept() -> None:
    body = b"<postback><origin>SMS_MO</origin><from>111</from><from>222</from></postback>"
    record = parse_postback(body, "text/xml").records[0]
    assert record.sender == "111"
    assert record.fields["from"] == ["111", "222"]


def test_charset_from_content_type() -> None:
    body = '{"origin":"SMS_MO","tracking-id":"x","message-text":"Grüße"}'.encode("latin-1")
    assert parse_postback(body, "application/json; charset=ISO-8859-1").records[0].text == "Grüße"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-04-24T18:34:00Z", "2026-04-24T18:34:00+00:00"),
        ("2025-11-17T16:57:00.146690+00:00", "2025-11-17T16:57:00.146690+00:00"),
        ("2014-02-03T11:19:49-05:00", "2014-02-03T11:19:49-05:00"),
        ("2014-02-03 11:19:49-05", "2014-02-03T11:19:49-05:00"),
        ("2014-02-03T11:19:49-0500", "2014-02-03T11:19:49-05:00"),
        ("2014-02-03T11:19:49.123456789z", "2014-02-03T11:19:49.123456+00:00"),
        ("2014-02-03T11:19:49", None),  # no offset: we will not guess one
        ("yesterday at noon", None),
        ("2014-13-45T99:99:99Z", None),
        (None, None),
    ],
)
def test_timestamps(raw: str | None, expected: str | None) -> None:
    assert normalize_timestamp(raw) == expected


def test_unreadable_timestamp_stays_in_fields() -> None:
    body = b'{"origin":"SMS_MO","tracking-id":"t","timestamp":"soon"}'
    record = parse_postback(body, "application/json").records[0]
    assert record.timestamp is None and record.fields["timestamp"] == "soon"


@pytest.mark.parametrize(
    ("body", "content_type", "extension"),
    [
        (b'  {"a": 1}', None, "json"),
        (b"<postback/>", "text/xml", "xml"),
        (b"origin=SMS_MO&text=hi", "application/x-www-form-urlencoded", "txt"),
        (b"\x00\x01\x02\xff", "application/octet-stream", "bin"),
        (b"", None, "bin"),
        ("{}".encode("utf-16"), None, "json"),
    ],
)
def test_body_extension(body: bytes, content_type: str | None, extension: str) -> None:
    assert body_extension(body, content_type) == extension


def test_large_but_legitimate_bodies_parse_quickly() -> None:
    copy_to = ",".join(f'{{"number":"1555{n:07d}"}}' for n in range(100_000))
    body = f'{{"origin":"MMS_MO","tracking-id":"big","copy-to":[{copy_to}]}}'.encode()
    notifications = b"".join(
        b"<NOTIFICATION><ORIGIN>SMS_MO</ORIGIN><TRACKINGID>n%d</TRACKINGID></NOTIFICATION>" % n
        for n in range(1000)
    )
    started = time.monotonic()
    assert len(parse_postback(body, "application/json").records[0].copy_to) == 100_000
    batch = parse_postback(b"<POSTBACK>" + notifications + b"</POSTBACK>", "text/xml").records
    assert [r.tracking_id for r in batch] == [f"n{n}" for n in range(1000)]
    assert time.monotonic() - started < 5  # a bound on pathological slowness, not a benchmark


def test_many_colliding_attributes_parse_quickly() -> None:
    attributes = b" ".join(b'a%d="x" n:a%d="y"' % (n, n) for n in range(50_000))
    body = b'<postback xmlns:n="urn:n" ' + attributes + b"><origin>SMS_MO</origin></postback>"
    started = time.monotonic()
    fields = parse_postback(body, "text/xml").records[0].fields
    assert (fields["@a49999"], fields["@{urn:n}a49999"]) == ("x", "y")
    assert time.monotonic() - started < 5  # a bound on quadratic slowness, not a benchmark


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b"<a>" * 50_000 + b"</a>" * 50_000,
        b'{"origin": 1e999999, "tracking-id": 1' + b"0" * 100_000 + b"}",
        "\ud800".encode("utf-8", "surrogatepass"),
        b'{"origin":"SMS_MO","text":"nul\x00byte"}',
        b"<postback><origin>MMS_MO</origin>\x00</postback>",
    ],
)
def test_nasty_bodies_raise_only_parse_error_or_parse(body: bytes) -> None:
    try:
        parsed = parse_postback(body, None)
    except ParseError:
        return
    assert parsed.records


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=2000), content_type=st.sampled_from([None, "application/json", "text/xml", FORM])
)
def test_arbitrary_bytes_raise_nothing_but_parse_error(body: bytes, content_type: str | None) -> None:
    with contextlib.suppress(ParseError):
        parse_postback(body, content_type)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=500), content_type=st.sampled_from([None, "application/json", "text/xml", FORM]))
def test_arbitrary_text_raises_nothing_but_parse_error(text: str, content_type: str | None) -> None:
    with contextlib.suppress(ParseError):
        parse_postback(text.encode("utf-8", "surrogatepass"), content_type)


field_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
    str.strip
)


@settings(max_examples=200, deadline=None)
@given(tracking_id=field_text, sender=field_text, to=field_text)
def test_generated_json_postbacks_round_trip(tracking_id: str, sender: str, to: str) -> None:
    body = json.dumps(
        {"origin": "SMS_MO", "code": "N401", "tracking-id": tracking_id, "from": sender, "to": to}
    )
    record: Record = parse_postback(body.encode(), "application/json").records[0]
    assert (record.tracking_id, record.sender, record.to) == (tracking_id.strip(), sender.strip(), to.strip())


def test_attributes_are_kept_in_fields() -> None:
    record = parse_postback(sample("xml_notification_body.xml"), "text/xml").records[0]
    assert record.fields["@ID"] == "4471093" and record.fields["@CREATED"] == "2011-08-02 07:20:44-04"
    assert record.fields["BODY"]["STATUS"] == {
        "@TEXT": "Retrieved", "@CELLY": "motorazrv3", "@PROVIDER": "Verizon Wireless", "#text": "",
    }  # fmt: skip
    assert record.fields["BODY"]["HISTORYID"] == "991823"  # a plain leaf stays a plain string


def test_namespaced_attributes_keep_their_local_name_unless_two_collide() -> None:
    body = b'<postback xmlns:a="urn:a" a:v="1" v="2"><origin a:x="3">SMS_MO</origin></postback>'
    fields = parse_postback(body, "text/xml").records[0].fields
    assert fields == {"@v": "2", "@{urn:a}v": "1", "origin": {"@x": "3", "#text": "SMS_MO"}}
    assert parse_postback(body, "text/xml").records[0].origin == "SMS_MO"


def test_mixed_text_of_a_parent_is_kept() -> None:
    body = b"<postback><origin>SMS_MO</origin>stray <b/>text</postback>"
    assert parse_postback(body, "text/xml").records[0].fields["#text"] == "stray text"


def test_xml_in_a_form_field_keeps_the_other_form_fields() -> None:
    record = parse_postback(sample("form_xml_lower.txt"), FORM).records[0]
    assert record.fields["form:account"] == "acme-01"
    assert record.fields["tracking-id"] == "MMS_MO_iLnCRrL6"


def test_a_form_field_named_xml_that_holds_no_xml_is_an_ordinary_field() -> None:
    parsed = parse_postback(b"origin=SMS_MO&tracking-id=t&xml=none", FORM)
    assert parsed.format == "form" and parsed.records[0].fields["xml"] == "none"


def test_transaction_id_is_the_sms_mo_identity_for_dedup() -> None:
    record = parse_postback(sample("xml_sms_mo_n211.xml"), "text/xml").records[0]
    assert dedup_key(record, "f" * 64, 1) == "SMS_MO|N211|511XG-02294-192SA-482H8"


def test_tracking_id_wins_over_transaction_id_whatever_the_order() -> None:
    body = b"<POSTBACK><ORIGIN>SMS_MO</ORIGIN><TRANSACTIONID>tx</TRANSACTIONID><TRACKINGID>tr</TRACKINGID></POSTBACK>"
    assert parse_postback(body, "text/xml").records[0].tracking_id == "tr"
    body = b'{"origin":"SMS_MO","tracking-id":"","transaction-id":"tx"}'
    assert parse_postback(body, "application/json").records[0].tracking_id == "tx"


def test_a_notification_field_wins_over_the_same_field_in_its_body() -> None:
    body = b"<NOTIFICATION><TO>1</TO><BODY><TO>2</TO><FROM>3</FROM></BODY></NOTIFICATION>"
    record = parse_postback(body, "text/xml").records[0]
    assert (record.to, record.sender, record.kind) == ("1", "3", "other")


CODE_TABLE = {
    "N101": "status", "N102": "status", "N103": "status", "N013": "status", "N003": "status", "N201": "status",
    "N202": "status", "N501": "status", "N502": "status", "E002": "status", "E011": "status", "E101": "status",
    "E102": "status", "E202": "status", "E501": "status", "E502": "status", "E999": "status",
    "N211": "sms_mo", "N401": "mms_mo",
    "N301": "other", "N302": "other", "N303": "other", "N304": "other", "N801": "other",
    "N999": "other", "E301": "other", "X999": "other",
}  # fmt: skip


@pytest.mark.parametrize(("code", "kind"), sorted(CODE_TABLE.items()))
def test_without_an_origin_the_code_gives_the_kind(code: str, kind: str) -> None:
    body = f'{{"code":"{code.lower()}","tracking-id":"t"}}'.encode()
    assert parse_postback(body, "application/json").records[0].kind == kind


@pytest.mark.parametrize(
    ("origin", "kind"),
    [("MMS_MO", "mms_mo"), ("SMS_MO", "sms_mo"), ("MMS_MT", "status"), ("SMS_MT", "status"), ("sub", "other"),
     ("EMAIL_SUB", "other"), ("GENERATE_PASS", "other")],
)  # fmt: skip
def test_the_origin_gives_the_kind_whatever_the_code(origin: str, kind: str) -> None:
    body = f'{{"origin":"{origin}","code":"N401","tracking-id":"t"}}'.encode()
    assert parse_postback(body, "application/json").records[0].kind == kind


# --- fields round-trip every element and attribute of any XML body

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
xml_name = st.builds(
    str.__add__, st.sampled_from(NAME_CHARS), st.text(NAME_CHARS + "0123456789._-", max_size=6)
).filter(lambda name: fold(name) != "notification")
xml_text = st.text(
    st.characters(max_codepoint=0xFFFD, exclude_categories=("Cs", "Cc", "Zl", "Zp")),
    max_size=12,
).map(str.strip)


@st.composite
def xml_elements(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    element = ET.Element(draw(xml_name), draw(st.dictionaries(xml_name, xml_text, max_size=3)))
    children = [] if depth >= 2 else draw(st.lists(xml_elements(depth=depth + 1), max_size=3))
    element.extend(children)
    if not children:
        element.text = draw(xml_text)
    return element


def canonical(element: ET.Element) -> tuple[Any, ...]:
    """What `fields` promises to keep: tag, attributes, text, and the children grouped by tag (in order)."""
    children: dict[str, list[Any]] = {}
    for child in element:
        children.setdefault(child.tag, []).append(canonical(child))
    text = (element.text or "").strip() if not len(element) else ""
    return element.tag, dict(element.attrib), text, children


def rebuild(tag: str, value: Any) -> ET.Element:
    """The inverse of the documented `fields` shape."""
    element = ET.Element(tag)
    if isinstance(value, str):
        element.text = value
        return element
    for key, item in value.items():
        if key.startswith("@"):
            element.set(key[1:], item)
        elif key == "#text":
            element.text = item
        else:
            element.extend(rebuild(key, one) for one in (item if isinstance(item, list) else [item]))
    return element


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    root_attributes=st.dictionaries(xml_name, xml_text, max_size=3),
    children=st.lists(xml_elements(), max_size=5),
)
def test_fields_round_trip_every_element_and_attribute(
    root_attributes: dict[str, str], children: list[ET.Element]
) -> None:
    root = ET.Element("postback", root_attributes)
    ET.SubElement(root, "tracking-id").text = "always-one-postback-field"
    root.extend(children)
    record = parse_postback(ET.tostring(root, encoding="utf-8"), "text/xml").records[0]
    assert canonical(rebuild("postback", record.fields)) == canonical(root)


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        (r"lone \ud800 high", "lone \ufffd high"),
        (r"lone \uDC00 low", "lone \ufffd low"),
        (r"\udc00\ud800 reversed", "\ufffd\ufffd reversed"),
        (r"a pair \ud83d\ude00 is one character", "a pair \U0001f600 is one character"),
        (r"an escaped backslash \\ud800", "an escaped backslash \\ud800"),
    ],
)
def test_half_a_surrogate_pair_becomes_a_replacement_character(escaped: str, text: str) -> None:
    """No UTF-8 file or database takes half a pair: the record gets U+FFFD, body.json keeps the bytes."""
    body = (
        '{"origin": "SMS_MO", "tracking-id": "t", "text": "' + escaped + '", "x\\udfff": ["\\ud800"]}'
    ).encode()
    (record,) = parse_postback(body, "application/json").records
    assert record.text == text
    assert record.fields["x\ufffd"] == ["\ufffd"]
    assert json.dumps(record.fields, ensure_ascii=False).encode()  # every string is whole UTF-8 now


def test_half_pairs_deep_in_a_batch_are_replaced_without_recursion() -> None:
    deep = '{"a": ' * 900 + '"\\ud800"' + "}" * 900
    body = ('[{"origin": "SMS_MO", "tracking-id": "t", "x": ' + deep + "}]").encode()
    (record,) = parse_postback(body, None).records
    value = record.fields["x"]
    for _ in range(900):
        value = value["a"]
    assert value == "\ufffd"
