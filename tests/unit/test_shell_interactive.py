"""Tab completion on the line editor, and raw input cut into bounded lines."""

from __future__ import annotations

from pegasus_kv.shell.interactive import Completion, LineSplitter, complete_line, format_choices


def test_a_single_candidate_completes_the_word_and_adds_a_space() -> None:
    assert complete_line("cluster_i", 9, ["cluster_info"]) == Completion("cluster_info ", 13)
    assert complete_line("use te", 6, ["temp"]) == Completion("use temp ", 9)


def test_completion_in_the_middle_of_a_line_keeps_what_follows() -> None:
    # Cursor after "ver" in "ver --json": the word is completed, the space already there is kept.
    assert complete_line("ver --json", 3, ["version"]) == Completion("version --json", 7)


def test_several_candidates_complete_their_common_prefix_then_are_listed() -> None:
    assert complete_line("ex", 2, ["exist", "exit"]) == Completion("exi", 3)
    listed = complete_line("multi_", 6, ["multi_set", "multi_get", "multi_del"])
    assert listed == Completion("multi_", 6, ("multi_del", "multi_get", "multi_set"))


def test_nothing_matching_rings_the_bell() -> None:
    assert complete_line("zzz", 3, []) is None
    assert complete_line("zzz", 3, ["version"]) is None  # candidates that do not fit are ignored


def test_a_long_listing_is_cut() -> None:
    text = format_choices(tuple(f"table_{index:03}" for index in range(150)))
    assert text.endswith("... and 50 more\n")
    assert "table_099" in text and "table_100" not in text


def test_raw_input_is_cut_at_any_line_ending_and_overlong_lines_are_flagged() -> None:
    splitter = LineSplitter(max_line_chars=8)
    assert splitter.feed("ls\r\nversion\nhe") == ["ls", "version"]
    assert splitter.feed("lp\r") == ["help"]
    assert splitter.feed("x" * 20 + "\nls\n") == [None, "ls"]
    assert splitter.feed("exit") == []
    assert splitter.finish() == ["exit"]
