"""How command output reaches the SSH channel: streams split without a terminal, one stream on a
terminal, and progress lines that neither flood a script's stderr nor litter a terminal."""

from __future__ import annotations

from typing import cast

import asyncssh

from pegasus_kv.shell.channel_output import ChannelOutput


class RecordingChannel:
    """Records what would go over the channel, as (stream, text) in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.broken = False

    def write(self, text: str) -> None:
        self._send("stdout", text)

    def write_stderr(self, text: str) -> None:
        self._send("stderr", text)

    def _send(self, stream: str, text: str) -> None:
        if self.broken:
            raise BrokenPipeError
        self.sent.append((stream, text))


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def output(
    channel: RecordingChannel, clock: Clock, *, terminal: bool, translate: bool = False
) -> ChannelOutput:
    chan = cast(asyncssh.SSHServerChannel[str], channel)
    return ChannelOutput(chan, terminal=terminal, translate_newlines=translate, clock=clock)


def test_without_a_terminal_data_goes_to_stdout_and_errors_and_progress_to_stderr() -> None:
    channel, clock = RecordingChannel(), Clock()
    out = output(channel, clock, terminal=False)
    out.progress("scanned 1000 rows")
    clock.now_s += 0.5
    out.progress("scanned 2000 rows")  # within a second of the last one: not shown
    clock.now_s += 0.6
    out.progress("scanned 3000\nrows")
    out.write('{"count": 3000}\n')
    out.error("error: TIMEOUT: partition 3\n")

    assert channel.sent == [
        ("stderr", "scanned 1000 rows\n"),
        ("stderr", "scanned 3000 rows\n"),
        ("stdout", '{"count": 3000}\n'),
        ("stderr", "error: TIMEOUT: partition 3\n"),
    ]


def test_on_a_terminal_progress_rewrites_one_line_that_is_blanked_before_the_result() -> None:
    channel, clock = RecordingChannel(), Clock()
    out = output(channel, clock, terminal=True)
    out.progress("partition 1/8")
    clock.now_s += 0.3
    out.progress("partition 2/8")
    out.error("error: BUSY\n")  # errors share the terminal with the data

    assert channel.sent == [
        ("stdout", "\rpartition 1/8"),
        ("stdout", "\rpartition 2/8"),
        ("stdout", "\r" + " " * len("partition 2/8") + "\r"),
        ("stdout", "error: BUSY\n"),
    ]


def test_a_pty_without_the_line_editor_gets_carriage_returns() -> None:
    channel, clock = RecordingChannel(), Clock()
    output(channel, clock, terminal=True, translate=True).write("a\nb\r\n")
    assert channel.sent == [("stdout", "a\r\nb\r\n")]


def test_a_channel_that_went_away_swallows_further_output() -> None:
    channel, clock = RecordingChannel(), Clock()
    out = output(channel, clock, terminal=False)
    channel.broken = True
    out.write("lost\n")
    assert out.closed
    channel.broken = False
    out.write("also lost\n")
    assert channel.sent == []
