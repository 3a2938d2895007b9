"""Command lines: tokenizing, and a small declarative spec per command that parses its arguments.

Tokens split on whitespace with shell-style quotes ('...' and "..."), through shlex in POSIX mode
with its own backslash handling turned off: a backslash stays in the token, so that Pegasus-style
escapes (`\\x00`, `\\n`, `\\\\`) reach `output.unescape` intact, quoted or not. A `#` is an ordinary
character inside a line (values may hold one); a line that starts with `#` is a comment.

A spec names the command's positional arguments and options (Pegasus's letters and long names),
whether it changes the cluster (`mutates`: refused for readonly keys), and whether it prints data
(then it takes `--json`). Parsing never exits and never prints: anything wrong raises UsageError,
which the shell answers with exit status 2 and the usage line.
"""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from pegasus_kv.core.invariants import InvariantViolation
from pegasus_kv.core.validation import MAX_KEYS_PER_REQUEST
from pegasus_kv.shell.output import EscapeError, unescape

# Bounds of one command line: a multi_set of MAX_KEYS_PER_REQUEST pairs, or one value near the
# 1 MB write limit written as \xNN escapes (4 characters a byte), fits; anything beyond is refused
# before any work.
MAX_LINE_CHARS = 4 * 1024 * 1024 + 4096
MAX_TOKENS = 2 * MAX_KEYS_PER_REQUEST + 64

_NEGATIVE_NUMBER = re.compile(r"-\d+")
_TRUE_WORDS = frozenset({"true", "yes", "1"})
_FALSE_WORDS = frozenset({"false", "no", "0"})


class ShellInvariantViolation(InvariantViolation):
    """A command spec that contradicts itself (a programming error, caught at import)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ShellInvariantViolation(message)


class UsageError(Exception):
    """Bad input on the command line: the shell prints the message and the command's usage."""

    def __init__(self, message: str, *, show_usage: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.show_usage = show_usage  # False when the usage line would not help (no table selected)


class Kind(enum.Enum):
    """What an argument holds, and so how its token is converted."""

    FLAG = "flag"  # an option without a value: present or not
    TEXT = "text"  # a str as typed
    BYTES = "bytes"  # a key or value: text with Pegasus-style escapes, converted to bytes
    INT = "int"  # a decimal integer within [minimum, maximum]
    BOOL = "bool"  # true|false (Pegasus's `-a true`)
    CHOICE = "choice"  # one of `choices`


@dataclass(frozen=True)
class Option:
    names: tuple[str, ...]  # ("-n", "--max_count"): short and long spellings, the first one shown
    dest: str
    kind: Kind
    help: str
    metavar: str = ""
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None

    def __post_init__(self) -> None:
        check(bool(self.names), "an option needs a name")
        check(all(name.startswith("-") and len(name) > 1 for name in self.names), "options start with -")
        check((self.kind is Kind.CHOICE) == bool(self.choices), f"{self.names[0]}: choices iff CHOICE")

    @property
    def takes_value(self) -> bool:
        return self.kind is not Kind.FLAG

    @property
    def value_hint(self) -> str:
        if self.kind is Kind.CHOICE:
            return "|".join(self.choices)
        if self.kind is Kind.BOOL:
            return "true|false"
        return self.metavar or self.dest.upper()

    @property
    def usage(self) -> str:
        names = "|".join(self.names)
        return f"[{names} {self.value_hint}]" if self.takes_value else f"[{names}]"


@dataclass(frozen=True)
class Positional:
    metavar: str  # "HASH_KEY"
    dest: str
    kind: Kind
    help: str = ""
    required: bool = True
    repeated: bool = False  # takes the remaining arguments (at least one when required)
    max_count: int = MAX_KEYS_PER_REQUEST  # of a repeated argument
    completes_tables: bool = False  # tab completion offers table names here
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None

    def __post_init__(self) -> None:
        check(self.kind is not Kind.FLAG, f"{self.metavar}: a positional argument is not a flag")
        check((self.kind is Kind.CHOICE) == bool(self.choices), f"{self.metavar}: choices iff CHOICE")
        check(self.max_count > 0, f"{self.metavar}: max_count must be positive")

    @property
    def usage(self) -> str:
        text = self.metavar + ("..." if self.repeated else "")
        return text if self.required else f"[{text}]"


JSON_OPTION = Option(("--json",), "json", Kind.FLAG, "print one JSON document instead of a table")
# Data and scan commands run on the session's table (`use`), or on this one for this command only:
# a one-shot `ssh ... 'get --table temp HK SK'` has no session to `use` a table in.
TABLE_OPTION = Option(
    ("--table",), "table_override", Kind.TEXT, "run on this table instead of the current one", "TABLE"
)

ArgumentValue = str | bytes | int | bool | list[str] | list[bytes] | list[int]


@dataclass(frozen=True)
class ParsedArgs:
    """The converted arguments of one command line, by dest. Absent options are absent."""

    command: str
    values: dict[str, ArgumentValue] = field(default_factory=dict)

    def has(self, dest: str) -> bool:
        return dest in self.values

    def flag(self, dest: str) -> bool:
        value = self.values.get(dest, False)
        check(isinstance(value, bool), f"{dest} is not a flag")
        return bool(value)

    def text(self, dest: str, default: str | None = None) -> str:
        value = self.values.get(dest, default)
        if value is None:
            raise UsageError(f"missing {dest}")
        check(isinstance(value, str), f"{dest} is not text")
        assert isinstance(value, str)
        return value

    def optional_text(self, dest: str) -> str | None:
        return self.text(dest) if dest in self.values else None

    def data(self, dest: str, default: bytes | None = None) -> bytes:
        value = self.values.get(dest, default)
        if value is None:
            raise UsageError(f"missing {dest}")
        check(isinstance(value, bytes), f"{dest} is not bytes")
        assert isinstance(value, bytes)
        return value

    def optional_data(self, dest: str) -> bytes | None:
        return self.data(dest) if dest in self.values else None

    def integer(self, dest: str, default: int | None = None) -> int:
        value = self.values.get(dest, default)
        if value is None:
            raise UsageError(f"missing {dest}")
        check(isinstance(value, int) and not isinstance(value, bool), f"{dest} is not an int")
        assert isinstance(value, int)
        return value

    def optional_integer(self, dest: str) -> int | None:
        return self.integer(dest) if dest in self.values else None

    def boolean(self, dest: str, default: bool) -> bool:
        value = self.values.get(dest, default)
        check(isinstance(value, bool), f"{dest} is not a bool")
        return bool(value)

    def texts(self, dest: str) -> list[str]:
        value = self.values.get(dest, [])
        check(isinstance(value, list) and all(isinstance(item, str) for item in value), f"{dest}: texts")
        assert isinstance(value, list)
        return [str(item) for item in value]

    def datas(self, dest: str) -> list[bytes]:
        value = self.values.get(dest, [])
        check(isinstance(value, list) and all(isinstance(item, bytes) for item in value), f"{dest}: bytes")
        assert isinstance(value, list)
        return [bytes(item) for item in value if isinstance(item, bytes)]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    group: str  # the heading `help` lists it under
    summary: str  # one line for `help`
    positionals: tuple[Positional, ...] = ()
    options: tuple[Option, ...] = ()
    mutates: bool = False  # changes the cluster: refused for a readonly key
    prints_data: bool = False  # takes --json
    aliases: tuple[str, ...] = ()
    description: str = ""  # the rest of `help NAME`
    usage_tail: str = ""  # grammar the specs cannot say (check_and_mutate's mutations)
    uses_table: bool = False  # runs on the current table: takes --table TABLE

    def __post_init__(self) -> None:
        dests = [option.dest for option in self.all_options] + [arg.dest for arg in self.positionals]
        check(len(dests) == len(set(dests)), f"{self.name}: two arguments share a dest")
        names = [name for option in self.all_options for name in option.names]
        check(len(names) == len(set(names)), f"{self.name}: two options share a name")
        for index, positional in enumerate(self.positionals):
            last = index == len(self.positionals) - 1
            check(not positional.repeated or last, f"{self.name}: only the last argument repeats")
            if index > 0:
                previous = self.positionals[index - 1]
                check(previous.required or not positional.required, f"{self.name}: optional args last")

    @property
    def all_options(self) -> tuple[Option, ...]:
        options = (*self.options, TABLE_OPTION) if self.uses_table else self.options
        return (*options, JSON_OPTION) if self.prints_data else options

    @property
    def usage(self) -> str:
        words = [self.name, *(arg.usage for arg in self.positionals), *(o.usage for o in self.all_options)]
        if self.usage_tail:
            words.append(self.usage_tail)
        return " ".join(words)

    def option_named(self, name: str) -> Option | None:
        for option in self.all_options:
            if name in option.names:
                return option
        return None

    def option_names(self) -> list[str]:
        return [name for option in self.all_options for name in option.names]

    def parse(self, tokens: Sequence[str]) -> ParsedArgs:
        """Convert the arguments after the command name (UsageError when anything is wrong)."""
        values: dict[str, ArgumentValue] = {}
        positional_tokens: list[str] = []
        index = 0
        only_positionals = False
        while index < len(tokens):
            token = tokens[index]
            index += 1
            if only_positionals or not token.startswith("-") or token == "-":
                positional_tokens.append(token)
                continue
            if token == "--":
                only_positionals = True
                continue
            name, equals, attached = token.partition("=")
            option = self.option_named(name if token.startswith("--") else token)
            if option is None or (equals and not token.startswith("--")):
                if _NEGATIVE_NUMBER.fullmatch(token):
                    positional_tokens.append(token)
                    continue
                raise UsageError(
                    f"{self.name}: unknown option {token!r} (put -- before an argument that starts with -)"
                )
            if option.dest in values:
                raise UsageError(f"{self.name}: option {option.names[0]} given twice")
            if not option.takes_value:
                if equals:
                    raise UsageError(f"{self.name}: option {name} takes no value")
                values[option.dest] = True
                continue
            if equals:
                raw = attached
            elif index < len(tokens):
                raw = tokens[index]
                index += 1
            else:
                raise UsageError(f"{self.name}: option {token} needs a value ({option.value_hint})")
            values[option.dest] = _convert(
                option.kind, raw, option.names[0], option.choices, option.minimum, option.maximum
            )
        self._assign_positionals(positional_tokens, values)
        return ParsedArgs(self.name, values)

    def _assign_positionals(self, tokens: list[str], values: dict[str, ArgumentValue]) -> None:
        remaining = list(tokens)
        for positional in self.positionals:
            if positional.repeated:
                if positional.required and not remaining:
                    raise UsageError(f"{self.name}: missing {positional.metavar}")
                if len(remaining) > positional.max_count:
                    raise UsageError(
                        f"{self.name}: at most {positional.max_count} {positional.metavar} arguments, "
                        f"got {len(remaining)}"
                    )
                converted = [_convert_positional(positional, token) for token in remaining]
                values[positional.dest] = _typed_list(converted)
                remaining = []
                continue
            if not remaining:
                if positional.required:
                    raise UsageError(f"{self.name}: missing {positional.metavar}")
                continue
            values[positional.dest] = _convert_positional(positional, remaining.pop(0))
        if remaining:
            raise UsageError(f"{self.name}: too many arguments (starting at {remaining[0]!r})")

    def positional_at(self, words_after_name: Sequence[str]) -> Positional | None:
        """The positional argument the next word would fill, given the words typed after the
        command name (for completion; options and their values are skipped)."""
        count = 0
        skip_value = False
        for word in words_after_name:
            if skip_value:
                skip_value = False
                continue
            if word.startswith("-") and word != "-" and "=" not in word:
                option = self.option_named(word)
                if option is not None:
                    skip_value = option.takes_value
                    continue
            count += 1
        for positional in self.positionals:
            if positional.repeated:
                return positional
            if count == 0:
                return positional
            count -= 1
        return None


def _typed_list(items: list[str | bytes | int | bool]) -> ArgumentValue:
    if all(isinstance(item, bytes) for item in items):
        return [item for item in items if isinstance(item, bytes)]
    if all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        return [item for item in items if isinstance(item, int)]
    return [str(item) for item in items]


def _convert_positional(positional: Positional, token: str) -> str | bytes | int | bool:
    return _convert(
        positional.kind, token, positional.metavar, positional.choices, positional.minimum, positional.maximum
    )


def _convert(
    kind: Kind,
    raw: str,
    what: str,
    choices: tuple[str, ...],
    minimum: int | None,
    maximum: int | None,
) -> str | bytes | int | bool:
    if kind is Kind.TEXT:
        return raw
    if kind is Kind.BYTES:
        try:
            return unescape(raw)
        except EscapeError as error:
            raise UsageError(f"{what}: {error}") from None
    if kind is Kind.INT:
        return parse_int(raw, what, minimum, maximum)
    if kind is Kind.BOOL:
        word = raw.lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise UsageError(f"{what} takes true or false, not {raw!r}")
    if kind is Kind.CHOICE:
        # Case-insensitive: Pegasus spells some names in upper case (propose -p ASSIGN_PRIMARY).
        for choice in choices:
            if raw.lower() == choice.lower():
                return choice
        raise UsageError(f"{what} takes one of {', '.join(choices)}; not {raw!r}")
    raise ShellInvariantViolation(f"no conversion for {kind}")


def parse_int(raw: str, what: str, minimum: int | None = None, maximum: int | None = None) -> int:
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit() or not digits.isascii() or len(digits) > 20:
        raise UsageError(f"{what} takes an integer, not {raw!r}")
    value = int(text)
    if minimum is not None and value < minimum:
        raise UsageError(f"{what} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise UsageError(f"{what} must be at most {maximum}, got {value}")
    return value


def tokenize(line: str) -> list[str]:
    """Split a command line into words (UsageError for an unterminated quote or an oversized line)."""
    if len(line) > MAX_LINE_CHARS:
        raise UsageError(f"the line is {len(line)} characters long, over the limit of {MAX_LINE_CHARS}")
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    lexer.escape = ""  # backslashes belong to the Pegasus-style escapes, see the module docstring
    tokens: list[str] = []
    try:
        for token in lexer:
            tokens.append(token)
            if len(tokens) > MAX_TOKENS:
                raise UsageError(f"more than {MAX_TOKENS} words on one line")
    except ValueError as error:
        raise UsageError(f"cannot split the line: {error} (an unterminated quote?)") from None
    return tokens


def is_blank(line: str) -> bool:
    """Empty, whitespace only, or a comment: nothing to run."""
    stripped = line.strip()
    return not stripped or stripped.startswith("#")
