"""Vocabulary several command groups share: filter and check-type names, limits, record rendering."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pegasus_kv.client import Filter
from pegasus_kv.core.messages import CheckType, FilterType
from pegasus_kv.core.validation import MAX_KEYS_PER_REQUEST
from pegasus_kv.shell.output import escape_bytes, format_table, quoted
from pegasus_kv.shell.parsing import Kind, Option, ParsedArgs, UsageError

# How many records multi_get / multi_get_range / multi_get_sortkeys / hash_scan / full_scan return
# when -n is not given, and the most -n may ask for. Pegasus's shell reads without a limit; an
# admin session over SSH gets a bounded answer and is told when there is more.
DEFAULT_MAX_COUNT = 1000
MAX_MULTI_GET_COUNT = MAX_KEYS_PER_REQUEST
MAX_SCAN_COUNT = 1_000_000

# Pegasus's shell names for filter types (-s / -h / -v options).
FILTER_TYPES = {
    "anywhere": FilterType.MATCH_ANYWHERE,
    "prefix": FilterType.MATCH_PREFIX,
    "postfix": FilterType.MATCH_POSTFIX,
}
VALUE_FILTER_TYPES = ("anywhere", "prefix", "postfix", "exact")

# Pegasus's shell names for check types (check_and_set / check_and_mutate -t).
CHECK_TYPES = {
    "no_check": CheckType.NO_CHECK,
    "not_exist": CheckType.VALUE_NOT_EXIST,
    "not_exist_or_empty": CheckType.VALUE_NOT_EXIST_OR_EMPTY,
    "exist": CheckType.VALUE_EXIST,
    "not_empty": CheckType.VALUE_NOT_EMPTY,
    "match_anywhere": CheckType.VALUE_MATCH_ANYWHERE,
    "match_prefix": CheckType.VALUE_MATCH_PREFIX,
    "match_postfix": CheckType.VALUE_MATCH_POSTFIX,
    "bytes_less": CheckType.VALUE_BYTES_LESS,
    "bytes_less_or_equal": CheckType.VALUE_BYTES_LESS_OR_EQUAL,
    "bytes_equal": CheckType.VALUE_BYTES_EQUAL,
    "bytes_greater_or_equal": CheckType.VALUE_BYTES_GREATER_OR_EQUAL,
    "bytes_greater": CheckType.VALUE_BYTES_GREATER,
    "int_less": CheckType.VALUE_INT_LESS,
    "int_less_or_equal": CheckType.VALUE_INT_LESS_OR_EQUAL,
    "int_equal": CheckType.VALUE_INT_EQUAL,
    "int_greater_or_equal": CheckType.VALUE_INT_GREATER_OR_EQUAL,
    "int_greater": CheckType.VALUE_INT_GREATER,
}


def filter_options(letter_type: str, letter_pattern: str, what: str, dest: str) -> tuple[Option, Option]:
    """The `-s TYPE -y PATTERN` pair of a key filter (Pegasus's letters vary by key)."""
    return (
        Option(
            (letter_type, f"--{what}_filter_type"),
            f"{dest}_filter_type",
            Kind.CHOICE,
            f"keep only {what}s matching the pattern anywhere / as prefix / as postfix",
            choices=tuple(FILTER_TYPES),
        ),
        Option(
            (letter_pattern, f"--{what}_filter_pattern"),
            f"{dest}_filter_pattern",
            Kind.BYTES,
            f"the {what} filter pattern",
            metavar="PATTERN",
        ),
    )


SORT_KEY_FILTER = filter_options("-s", "-y", "sort_key", "sort_key")
HASH_KEY_FILTER = filter_options("-h", "-x", "hash_key", "hash_key")
VALUE_FILTER = (
    Option(
        ("-v", "--value_filter_type"),
        "value_filter_type",
        Kind.CHOICE,
        "keep only records whose value matches the pattern (checked by the shell)",
        choices=VALUE_FILTER_TYPES,
    ),
    Option(("-z", "--value_filter_pattern"), "value_filter_pattern", Kind.BYTES, "the value filter pattern"),
)
START_INCLUSIVE = Option(
    ("-a", "--start_inclusive"), "start_inclusive", Kind.BOOL, "include START_SORT_KEY (default true)"
)
STOP_INCLUSIVE = Option(
    ("-b", "--stop_inclusive"), "stop_inclusive", Kind.BOOL, "include STOP_SORT_KEY (default false)"
)
NO_VALUE = Option(("-i", "--no_value"), "no_value", Kind.FLAG, "return keys only")
TIMEOUT_MS = Option(
    ("-t", "--timeout_ms"),
    "timeout_ms",
    Kind.INT,
    "timeout of each request in milliseconds (default: the client's)",
    metavar="MS",
    minimum=1,
    maximum=3_600_000,
)


def max_count_option(default: int, maximum: int) -> Option:
    return Option(
        ("-n", "--max_count"),
        "max_count",
        Kind.INT,
        f"return at most this many records (default {default}, at most {maximum})",
        metavar="N",
        minimum=1,
        maximum=maximum,
    )


def key_filter(args: ParsedArgs, dest: str) -> Filter | None:
    """The Filter of a `-s TYPE -y PATTERN` pair; a pattern without a type is a usage error."""
    type_name = args.optional_text(f"{dest}_filter_type")
    pattern = args.optional_data(f"{dest}_filter_pattern")
    if type_name is None:
        if pattern is not None:
            raise UsageError(f"a {dest} filter pattern needs a filter type too")
        return None
    if not pattern:
        return None  # Pegasus: an empty pattern filters nothing
    return Filter(FILTER_TYPES[type_name], pattern)


class ValueFilter:
    """Pegasus's shell checks value filters itself, on the records the scan returns."""

    def __init__(self, type_name: str | None, pattern: bytes | None) -> None:
        if type_name is None and pattern is not None:
            raise UsageError("a value filter pattern needs a filter type too (-v)")
        self._type = type_name
        self._pattern = pattern or b""

    @classmethod
    def of(cls, args: ParsedArgs) -> ValueFilter:
        return cls(args.optional_text("value_filter_type"), args.optional_data("value_filter_pattern"))

    @property
    def active(self) -> bool:
        return self._type is not None and (bool(self._pattern) or self._type == "exact")

    def matches(self, value: bytes) -> bool:
        if not self.active:
            return True
        if self._type == "anywhere":
            return self._pattern in value
        if self._type == "prefix":
            return value.startswith(self._pattern)
        if self._type == "postfix":
            return value.endswith(self._pattern)
        return value == self._pattern


def timeout_s(args: ParsedArgs) -> float | None:
    timeout_ms = args.optional_integer("timeout_ms")
    return None if timeout_ms is None else timeout_ms / 1000


def record_json(hash_key: bytes, sort_key: bytes, value: bytes | None) -> dict[str, str | None]:
    return {
        "hash_key": escape_bytes(hash_key),
        "sort_key": escape_bytes(sort_key),
        "value": None if value is None else escape_bytes(value),
    }


def record_line(hash_key: bytes, sort_key: bytes, value: bytes | None) -> str:
    """One record as Pegasus's shell prints scan rows: "hk" : "sk" => "value"."""
    if value is None:
        return f"{quoted(hash_key)} : {quoted(sort_key)}\n"
    return f"{quoted(hash_key)} : {quoted(sort_key)} => {quoted(value)}\n"


def sort_key_table(items: Sequence[tuple[bytes, bytes]], *, no_value: bool) -> str:
    if no_value:
        return format_table(["sort_key"], [[quoted(sort_key)] for sort_key, _ in items])
    return format_table(["sort_key", "value"], [[quoted(sk), quoted(v)] for sk, v in items])


def unix_time_text(seconds: float) -> str:
    """A Unix time as `YYYY-MM-DD HH:MM:SS` UTC (how ls and app show create and drop times)."""
    if seconds <= 0:
        return "-"
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
