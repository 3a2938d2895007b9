"""Interactive sessions: tab completion on asyncssh's line editor, and splitting raw input into lines.

asyncssh's line editor (create_server(line_editor=True), active when the client asked for a PTY)
already edits the line and keeps history (up and down arrows, Ctrl-P/Ctrl-N); this module adds Tab:

    result = complete_line(line, cursor, shell.complete(line, cursor))
    # None: nothing matches (the editor rings the bell)
    # result.line / result.cursor: the edited line; result.choices: candidates to list

Like bash: one candidate is completed (and followed by a space); several are completed up to their
longest common prefix, and when that adds nothing they are listed under the line.

Without a PTY (`ssh -T HOST < script`), the session reads raw text: LineSplitter cuts it into lines,
bounded in length so a client cannot make the server buffer without end.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LISTED_CHOICES = 100
CHOICE_COLUMNS_CHARS = 100


@dataclass(frozen=True)
class Completion:
    line: str
    cursor: int
    choices: tuple[str, ...] = ()  # several candidates to show; the line is then unchanged


def word_start(line: str, cursor: int) -> int:
    """Where the word that ends at `cursor` begins (words are separated by whitespace)."""
    start = cursor
    while start > 0 and not line[start - 1].isspace():
        start -= 1
    return start


def common_prefix(words: list[str]) -> str:
    first, last = min(words), max(words)  # the common prefix of all is that of the extremes
    length = 0
    while length < min(len(first), len(last)) and first[length] == last[length]:
        length += 1
    return first[:length]


def complete_line(line: str, cursor: int, candidates: list[str]) -> Completion | None:
    """Apply `candidates` (whole words for the word ending at `cursor`) to the line."""
    cursor = max(0, min(cursor, len(line)))
    start = word_start(line, cursor)
    word = line[start:cursor]
    matching = sorted({candidate for candidate in candidates if candidate.startswith(word)})
    if not matching:
        return None
    if len(matching) == 1:
        insert = matching[0]
        if cursor == len(line) or not line[cursor].isspace():
            insert += " "
        new_line = line[:start] + insert + line[cursor:]
        return Completion(new_line, start + len(insert))
    prefix = common_prefix(matching)
    if len(prefix) > len(word):
        return Completion(line[:start] + prefix + line[cursor:], start + len(prefix))
    return Completion(line, cursor, tuple(matching))


def format_choices(choices: tuple[str, ...]) -> str:
    """Candidates in columns, at most MAX_LISTED_CHOICES of them, ending with a newline."""
    shown = choices[:MAX_LISTED_CHOICES]
    width = max(len(choice) for choice in shown) + 2
    per_row = max(1, CHOICE_COLUMNS_CHARS // width)
    rows = [
        "".join(choice.ljust(width) for choice in shown[index : index + per_row]).rstrip()
        for index in range(0, len(shown), per_row)
    ]
    if len(choices) > len(shown):
        rows.append(f"... and {len(choices) - len(shown)} more")
    return "\n".join(rows) + "\n"


class LineSplitter:
    """Cuts raw input into lines ("\\n", "\\r" or "\\r\\n" end one); None marks an overlong line."""

    def __init__(self, max_line_chars: int) -> None:
        self._max = max_line_chars
        self._partial: list[str] = []
        self._partial_chars = 0
        self._discarding = False  # inside an overlong line, up to its end
        self._after_cr = False

    def feed(self, data: str) -> list[str | None]:
        lines: list[str | None] = []
        for char in data:
            if char == "\n" and self._after_cr:
                self._after_cr = False
                continue  # the "\n" of a "\r\n"
            self._after_cr = char == "\r"
            if char in "\r\n":
                lines.append(None if self._discarding else "".join(self._partial))
                self._partial.clear()
                self._partial_chars = 0
                self._discarding = False
            elif not self._discarding:
                if self._partial_chars >= self._max:
                    self._discarding = True
                    self._partial.clear()
                    self._partial_chars = 0
                else:
                    self._partial.append(char)
                    self._partial_chars += 1
        return lines

    def finish(self) -> list[str | None]:
        """End of input: the last line, if it had no newline."""
        if self._discarding:
            self._discarding = False
            return [None]
        if self._partial:
            line = "".join(self._partial)
            self._partial.clear()
            self._partial_chars = 0
            return [line]
        return []
