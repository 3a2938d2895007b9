"""What the shell prints: bytes escaped the way Pegasus's shell shows them (and read back the same
way), aligned tables, and JSON documents that stay within their bound."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pegasus_kv.shell.output import (
    EscapeError,
    OutputTooLargeError,
    escape_bytes,
    format_fields,
    format_table,
    json_document,
    unescape,
)


def test_printable_ascii_stays_and_everything_else_is_escaped() -> None:
    assert escape_bytes(b"user:42") == "user:42"
    assert escape_bytes(b"\x00\xff\x7f") == r"\x00\xff\x7f"
    assert escape_bytes(b'a"b\\c\nd\te\r') == r"a\"b\\c\nd\te\r"
    assert escape_bytes("é".encode()) == r"\xc3\xa9"


def test_typed_text_with_escapes_becomes_bytes() -> None:
    assert unescape(r"\x00\xFFab") == b"\x00\xffab"
    assert unescape(r"a\\b\"c\'d\n\t\r\0") == b"a\\b\"c'd\n\t\r\x00"
    assert unescape("é") == "é".encode()  # text is UTF-8


@given(st.binary(max_size=64))
def test_anything_printed_can_be_typed_back(data: bytes) -> None:
    shown = escape_bytes(data)
    assert shown.isprintable() and shown.isascii()
    assert unescape(shown) == data


@pytest.mark.parametrize("text", [r"\x", r"\x1", r"\xzz", "\\", r"\u0041"])
def test_malformed_escapes_are_refused(text: str) -> None:
    with pytest.raises(EscapeError):
        unescape(text)


def test_tables_align_their_columns() -> None:
    table = format_table(["app_id", "app_name"], [["1", "temp"], ["12", "a_long_name"]])
    assert table.splitlines() == [
        "app_id  app_name",
        "1       temp",
        "12      a_long_name",
    ]
    assert format_table(["a"], []) == "a\n"
    with pytest.raises(ValueError):
        format_table(["a", "b"], [["only one"]])


def test_fields_align_their_colons() -> None:
    assert format_fields([("app_id", "1"), ("partition_count", "8")]).splitlines() == [
        "app_id          : 1",
        "partition_count : 8",
    ]


def test_a_json_document_is_one_line_and_bounded() -> None:
    text = json_document({"value": escape_bytes(b"\x00"), "n": 1})
    assert text.endswith("\n") and text.count("\n") == 1
    assert json.loads(text) == {"value": "\\x00", "n": 1}
    with pytest.raises(OutputTooLargeError, match="-n"):
        json_document({"rows": ["x" * 100]}, limit_chars=50)
