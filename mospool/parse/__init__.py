"""Postback bodies to records: the format readers (``readers``) and the message record (``message``)."""

from mospool.parse.message import Fields, Parsed, ParseError, Record, fold, normalize_timestamp
from mospool.parse.readers import body_extension, parse_postback

__all__ = [
    "Fields",
    "ParseError",
    "Parsed",
    "Record",
    "body_extension",
    "fold",
    "normalize_timestamp",
    "parse_postback",
]
