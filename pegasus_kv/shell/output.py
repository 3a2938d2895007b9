"""What commands print: the Output sink, Pegasus-style byte escapes, aligned tables, bounded JSON.

Keys and values are bytes. The shell shows them the way Pegasus's shell does (c_escape_string):
printable ASCII as is, `\\`, `"`, newline, tab, carriage return as backslash escapes, every other
byte as `\\xNN`. `unescape` reads the same notation back, so anything printed can be typed again.
JSON documents carry bytes as those escaped strings too (JSON strings must be text).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# A --json document larger than this is refused (exit 1) rather than sent: it would be a scan or a
# multi_get asked for more than a terminal or a script can use; narrow it with -n.
MAX_JSON_CHARS = 32 * 1024 * 1024

_ESCAPES = {ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"}
_UNESCAPES = {"\\": 0x5C, '"': 0x22, "'": 0x27, "n": 0x0A, "t": 0x09, "r": 0x0D, "0": 0x00}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class Output(Protocol):
    """Where a command writes. The SSH layer implements it per channel; tests collect it."""

    def write(self, text: str) -> None:
        """Command output (stdout); text includes its newlines."""

    def error(self, text: str) -> None:
        """Error and usage messages (stderr in one-shot mode)."""

    def progress(self, text: str) -> None:
        """A transient progress line of long work (count_data, full_scan)."""


@dataclass
class CollectingOutput:
    """An Output that keeps everything, for tests and for callers that post-process output."""

    written: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    progress_lines: list[str] = field(default_factory=list)

    def write(self, text: str) -> None:
        self.written.append(text)

    def error(self, text: str) -> None:
        self.errors.append(text)

    def progress(self, text: str) -> None:
        self.progress_lines.append(text)

    @property
    def stdout(self) -> str:
        return "".join(self.written)

    @property
    def stderr(self) -> str:
        return "".join(self.errors)

    def json(self) -> Any:
        """The one JSON document the command wrote (parsed: dicts, lists, str, numbers)."""
        return json.loads(self.stdout)

    def clear(self) -> None:
        self.written.clear()
        self.errors.clear()
        self.progress_lines.clear()


class EscapeError(ValueError):
    """A malformed escape in a typed key or value (a usage error for the shell)."""


def escape_bytes(data: bytes) -> str:
    """Printable text for any bytes: ASCII as is, backslash escapes, `\\xNN` for the rest."""
    parts: list[str] = []
    for byte in data:
        escaped = _ESCAPES.get(byte)
        if escaped is not None:
            parts.append(escaped)
        elif 0x20 <= byte < 0x7F:
            parts.append(chr(byte))
        else:
            parts.append(f"\\x{byte:02x}")
    return "".join(parts)


def unescape(text: str) -> bytes:
    """Bytes from typed text: `\\xNN`, `\\n`, `\\t`, `\\r`, `\\0`, `\\\\`, `\\"`, `\\'`; other
    characters as UTF-8. An unknown or truncated escape raises EscapeError."""
    if "\\" not in text:
        return text.encode()
    out = bytearray()
    position = 0
    while position < len(text):
        char = text[position]
        if char != "\\":
            out += char.encode()
            position += 1
            continue
        if position + 1 >= len(text):
            raise EscapeError(f"a lone backslash ends {text!r} (type \\\\ for a backslash)")
        code = text[position + 1]
        if code == "x":
            digits = text[position + 2 : position + 4]
            if len(digits) != 2 or not set(digits) <= _HEX_DIGITS:
                raise EscapeError(f"\\x needs two hex digits in {text!r}")
            out.append(int(digits, 16))
            position += 4
            continue
        byte = _UNESCAPES.get(code)
        if byte is None:
            raise EscapeError(f"unknown escape \\{code} in {text!r}")
        out.append(byte)
        position += 2
    return bytes(out)


def quoted(data: bytes) -> str:
    """A key or value in double quotes, escaped: how scans print rows (Pegasus's shell style)."""
    return f'"{escape_bytes(data)}"'


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An aligned table: one header line, one line per row, columns two spaces apart, text columns
    left-aligned. Returns the lines with their newlines (the header alone when rows is empty)."""
    widths = [len(header) for header in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a table row has {len(row)} cells for {len(headers)} columns")
        for column, cell in enumerate(row):
            widths[column] = max(widths[column], len(cell))
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(widths[column]) for column, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip() + "\n")
    return "".join(lines)


def format_fields(fields: Sequence[tuple[str, str]]) -> str:
    """`name : value` lines with the colons aligned (one record, as Pegasus's `app` prints it)."""
    if not fields:
        return ""
    width = max(len(name) for name, _ in fields)
    return "".join(f"{name.ljust(width)} : {value}\n" for name, value in fields)


class OutputTooLargeError(Exception):
    """A JSON document over MAX_JSON_CHARS."""


def json_document(value: object, *, limit_chars: int = MAX_JSON_CHARS) -> str:
    """One JSON document (with its newline). Bytes must already be escaped text (escape_bytes)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    if len(text) > limit_chars:
        raise OutputTooLargeError(
            f"the JSON output would be {len(text)} characters, over the limit of {limit_chars}; "
            f"ask for fewer records (-n)"
        )
    return text + "\n"
