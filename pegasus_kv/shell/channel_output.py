"""The Output of a shell command (shell.py's protocol) over one SSH channel.

    out = ChannelOutput(chan, terminal=False)    # one-shot: data on stdout, errors on stderr
    out = ChannelOutput(chan, terminal=True)     # a PTY: everything on the terminal

Without a terminal, data goes to stdout and errors to stderr, so `ssh HOST 'ls --json' | jq` sees
only the document, and progress lines (count_data, full_scan) go to stderr at most once a second.
On a terminal, everything is shown in order on one stream (a PTY merges them anyway), and progress
rewrites one line in place ("\\r"), at most five times a second; the next output first blanks it.

A channel that closed under the command (the client went away) makes further writes no-ops: the
session cancels the command when the connection is lost, and until then output has nowhere to go.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncssh

TERMINAL_PROGRESS_INTERVAL_S = 0.2
STREAM_PROGRESS_INTERVAL_S = 1.0
MAX_PROGRESS_CHARS = 200


class ChannelOutput:
    def __init__(
        self,
        chan: asyncssh.SSHServerChannel[str],
        *,
        terminal: bool,
        translate_newlines: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`translate_newlines`: send "\\r\\n" for "\\n" (a PTY without asyncssh's line editor)."""
        self._chan = chan
        self._terminal = terminal
        self._translate = translate_newlines
        self._clock = clock
        self._progress_chars = 0  # width of the progress line on the terminal (0: none shown)
        self._last_progress_s: float | None = None
        self.closed = False

    def write(self, text: str) -> None:
        self._end_progress()
        self._send(text, stderr=False)

    def error(self, text: str) -> None:
        self._end_progress()
        self._send(text, stderr=not self._terminal)

    def progress(self, text: str) -> None:
        line = " ".join(text.split())[:MAX_PROGRESS_CHARS]
        now = self._clock()
        interval = TERMINAL_PROGRESS_INTERVAL_S if self._terminal else STREAM_PROGRESS_INTERVAL_S
        if self._last_progress_s is not None and now - self._last_progress_s < interval:
            return  # shown recently enough; the final result follows anyway
        self._last_progress_s = now
        if self._terminal:
            self._send("\r" + line.ljust(self._progress_chars), stderr=False)
            self._progress_chars = len(line)
        else:
            self._send(line + "\n", stderr=True)

    def finish(self) -> None:
        """The command is over: blank a progress line still on the terminal."""
        self._end_progress()
        self._last_progress_s = None

    def _end_progress(self) -> None:
        if self._progress_chars:
            self._send("\r" + " " * self._progress_chars + "\r", stderr=False)
            self._progress_chars = 0

    def _send(self, text: str, *, stderr: bool) -> None:
        if self.closed or not text:
            return
        if self._translate:
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        try:
            if stderr:
                self._chan.write_stderr(text)
            else:
                self._chan.write(text)
        except (BrokenPipeError, ConnectionError, asyncssh.Error):
            self.closed = True
