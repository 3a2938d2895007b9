"""Command lines as an operator types them: words, quotes, Pegasus-style escapes, options with
Pegasus's letters, and a usage error (never an exit, never a traceback) for anything wrong."""

from __future__ import annotations

import pytest

from pegasus_kv.shell.parsing import (
    MAX_LINE_CHARS,
    MAX_TOKENS,
    CommandSpec,
    Kind,
    Option,
    Positional,
    ShellInvariantViolation,
    UsageError,
    is_blank,
    tokenize,
)

RANGE = CommandSpec(
    "multi_get_range",
    "data",
    "read a range",
    positionals=(
        Positional("HASH_KEY", "hash_key", Kind.BYTES),
        Positional("START", "start", Kind.BYTES),
        Positional("STOP", "stop", Kind.BYTES),
    ),
    options=(
        Option(("-a", "--start_inclusive"), "start_inclusive", Kind.BOOL, ""),
        Option(("-s", "--sort_key_filter_type"), "filter", Kind.CHOICE, "", choices=("anywhere", "prefix")),
        Option(("-n", "--max_count"), "max_count", Kind.INT, "", minimum=1, maximum=100),
        Option(("-r", "--reverse"), "reverse", Kind.FLAG, ""),
    ),
    prints_data=True,
)
INCR = CommandSpec(
    "incr",
    "data",
    "add",
    positionals=(
        Positional("HASH_KEY", "hash_key", Kind.BYTES),
        Positional("SORT_KEY", "sort_key", Kind.BYTES),
        Positional("INCREMENT", "increment", Kind.INT, required=False),
    ),
)
MULTI_DEL = CommandSpec(
    "multi_del",
    "data",
    "delete",
    positionals=(
        Positional("HASH_KEY", "hash_key", Kind.BYTES),
        Positional("SORT_KEY", "sort_keys", Kind.BYTES, repeated=True, max_count=3),
    ),
)


def test_words_split_on_spaces_and_quotes_group_them() -> None:
    assert tokenize("set  hk 'sort key' \"a value\"") == ["set", "hk", "sort key", "a value"]
    assert tokenize('set hk sk ""') == ["set", "hk", "sk", ""]  # an empty value is a word


def test_backslashes_reach_the_escape_decoder_untouched_quoted_or_not() -> None:
    assert tokenize(r"set \x00 'a\x01' " + '"b\\n"') == ["set", r"\x00", r"a\x01", r"b\n"]


def test_a_hash_sign_inside_a_line_is_data_but_a_line_starting_with_one_is_a_comment() -> None:
    assert tokenize("set hk sk a#b") == ["set", "hk", "sk", "a#b"]
    assert is_blank("   # just a note") and is_blank("") and is_blank(" \t ")
    assert not is_blank("ls")


def test_an_unterminated_quote_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unterminated quote"):
        tokenize("set hk sk 'oops")


def test_oversized_lines_and_too_many_words_are_refused_before_any_work() -> None:
    with pytest.raises(UsageError, match="over the limit"):
        tokenize("x" * (MAX_LINE_CHARS + 1))
    with pytest.raises(UsageError, match="words on one line"):
        tokenize("a " * (MAX_TOKENS + 1))


def test_options_take_pegasus_letters_long_names_and_the_equals_form() -> None:
    args = RANGE.parse(
        ["hk", "a", "z", "-a", "false", "--sort_key_filter_type", "PREFIX", "--max_count=5", "-r"]
    )
    assert args.data("hash_key") == b"hk" and args.data("stop") == b"z"
    assert args.boolean("start_inclusive", True) is False
    assert args.text("filter") == "prefix"  # choices are case-insensitive, stored canonically
    assert args.integer("max_count") == 5 and args.flag("reverse") and not args.flag("json")


def test_absent_options_fall_back_to_the_commands_defaults() -> None:
    args = RANGE.parse(["hk", "", ""])
    assert args.data("start") == b"" and not args.has("max_count")
    assert args.integer("max_count", 7) == 7 and args.boolean("start_inclusive", True)


def test_escapes_in_keys_become_bytes() -> None:
    args = RANGE.parse([r"\x00\xffk", r"a\tb", r"back\\slash"])
    assert args.data("hash_key") == b"\x00\xffk"
    assert args.data("start") == b"a\tb" and args.data("stop") == b"back\\slash"


def test_a_negative_number_is_an_argument_not_an_option() -> None:
    assert INCR.parse(["hk", "sk", "-5"]).integer("increment") == -5


def test_double_dash_ends_the_options() -> None:
    assert INCR.parse(["--", "-hk", "-sk"]).data("hash_key") == b"-hk"


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["hk", "a"], "missing STOP"),
        (["hk", "a", "z", "extra"], "too many arguments"),
        (["hk", "a", "z", "-x"], "unknown option '-x'"),
        (["hk", "a", "z", "-n"], "needs a value"),
        (["hk", "a", "z", "-n", "0"], "at least 1"),
        (["hk", "a", "z", "-n", "101"], "at most 100"),
        (["hk", "a", "z", "-n", "ten"], "takes an integer"),
        (["hk", "a", "z", "-a", "maybe"], "true or false"),
        (["hk", "a", "z", "-s", "regex"], "one of anywhere, prefix"),
        (["hk", "a", "z", "-r", "-r"], "given twice"),
        (["hk", "a", "z", "--reverse=yes"], "takes no value"),
        ([r"\x4", "a", "z"], "two hex digits"),
        ([r"\q", "a", "z"], "unknown escape"),
        (["trailing\\", "a", "z"], "lone backslash"),
    ],
)
def test_bad_arguments_raise_a_usage_error_that_says_what_is_wrong(words: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        RANGE.parse(words)


def test_a_repeated_argument_takes_the_rest_within_its_bound() -> None:
    assert MULTI_DEL.parse(["hk", "a", "b"]).datas("sort_keys") == [b"a", b"b"]
    with pytest.raises(UsageError, match="missing SORT_KEY"):
        MULTI_DEL.parse(["hk"])
    with pytest.raises(UsageError, match="at most 3"):
        MULTI_DEL.parse(["hk", "a", "b", "c", "d"])


def test_usage_is_generated_from_the_spec_in_pegasus_style() -> None:
    assert RANGE.usage == (
        "multi_get_range HASH_KEY START STOP [-a|--start_inclusive true|false] "
        "[-s|--sort_key_filter_type anywhere|prefix] [-n|--max_count MAX_COUNT] [-r|--reverse] [--json]"
    )
    assert INCR.usage == "incr HASH_KEY SORT_KEY [INCREMENT]"
    assert MULTI_DEL.usage == "multi_del HASH_KEY SORT_KEY..."


def test_a_spec_that_contradicts_itself_fails_at_definition() -> None:
    with pytest.raises(ShellInvariantViolation):
        CommandSpec(
            "bad",
            "x",
            "",
            positionals=(
                Positional("A", "a", Kind.TEXT, required=False),
                Positional("B", "b", Kind.TEXT),
            ),
        )
    with pytest.raises(ShellInvariantViolation):
        CommandSpec("bad", "x", "", options=(Option(("--json",), "x", Kind.FLAG, ""),), prints_data=True)
