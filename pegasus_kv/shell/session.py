"""One SSH session of the admin shell: a single command (`ssh HOST 'ls --json'`) or an interactive shell.

The session never starts an operating-system process. What the client asks to run is one shell
command line, whatever it looks like: `ssh HOST bash` runs the shell command `bash`, which does not
exist (exit 2). A PTY changes only how output is shown, never what runs.

- exec request (with or without a PTY): run that one command, write its output to stdout and its
  errors to stderr (to the terminal with a PTY), record it in the audit log, and exit with
  Outcome.exit_status (130 when interrupted).
- shell request with a PTY: asyncssh's line editor edits and keeps history; Tab completes through
  Shell.complete; the prompt is Shell.prompt. Ctrl-C while a command runs cancels it ("interrupted"),
  and the session goes on; Ctrl-C at the prompt drops the line. Ctrl-D on an empty line or `exit`
  ends the session.
- shell request without a PTY (`ssh -T HOST < commands`): each input line is one command, no prompt;
  the session exits with the status of the last command.

Ctrl-C reaches the server as a break request from the line editor ('\\x03' on a PTY), or as a
"signal" request (INT); either cancels the task running Shell.execute. A lost connection cancels it
too. Every session waits until its audit records are on disk before it sends its exit status.
Input queued while a command runs is bounded: past the bound the channel stops reading, so the
client's window fills instead of the server's memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

import asyncssh

from pegasus_kv.shell.audit import AuditEvent, AuditLog
from pegasus_kv.shell.channel_output import ChannelOutput
from pegasus_kv.shell.interactive import LineSplitter, complete_line, format_choices
from pegasus_kv.shell.roles import Role
from pegasus_kv.shell.shell import Outcome, Shell

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command ended by Ctrl-C
INTERRUPT_SIGNALS = frozenset({"INT", "TERM", "QUIT"})

ShellFactory = Callable[[Role], Shell]


@dataclass(frozen=True)
class Identity:
    """Who is on the other end: the SSH user name (recorded only), the key that logged in, its role."""

    user: str
    fingerprint: str
    role: Role
    peer: str  # "host:port"


@dataclass(frozen=True)
class SessionLimits:
    max_line_chars: int = 4096  # an interactive line (the line editor stops accepting input there)
    max_command_chars: int = 64 * 1024  # a one-shot command
    max_queued_lines: int = 64  # typed ahead while a command runs; reading pauses beyond
    audit_flush_timeout_s: float = 10.0


class _LineEditorChannel(Protocol):
    """What asyncssh's line-editor channel wrapper adds to a server channel (editor.py)."""

    def register_key(self, key: str, handler: Callable[[str, int], tuple[str, int] | bool]) -> None: ...
    def clear_input(self) -> None: ...


class _EndOfInput:
    """The input queue's end marker (the client sent EOF, or Ctrl-D on an empty line)."""


_EOF = _EndOfInput()


class ShellSession(asyncssh.SSHServerSession[str]):
    def __init__(
        self,
        identity: Identity,
        shell_factory: ShellFactory,
        audit: AuditLog,
        *,
        limits: SessionLimits,
        on_refused: Callable[[str, str], None],
        on_closed: Callable[[], None],
        track: Callable[[asyncio.Task[None]], None],
        banner: str = "",
    ) -> None:
        """`on_refused(request, detail)` audits a request this session refuses (a subsystem);
        `on_closed()` is called once when the channel is gone; `track(task)` is handed the task that
        runs the session (the server waits for them on shutdown, so their audit records get out)."""
        self._identity = identity
        self._shell_factory = shell_factory
        self._audit = audit
        self._limits = limits
        self._on_refused = on_refused
        self._on_closed = on_closed
        self._track = track
        self._banner = banner
        self._chan: asyncssh.SSHServerChannel[str] | None = None
        self._pty = False
        self._editor = False  # asyncssh's line editor is active (PTY with a terminal type)
        self._command: str | None = None
        self._shell: Shell | None = None
        self._out: ChannelOutput | None = None
        self._main: asyncio.Task[None] | None = None
        self._running: asyncio.Task[Outcome] | None = None  # the command being executed
        self._inputs: collections.deque[str | _EndOfInput | None] = collections.deque()
        self._input_ready = asyncio.Event()
        self._reading_paused = False
        self._splitter = LineSplitter(limits.max_line_chars)

    # --- asyncssh callbacks ----------------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[str]) -> None:
        self._chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self._pty = True
        self._editor = bool(term_type)  # asyncssh runs its line editor only with a terminal type
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self._on_refused("subsystem", subsystem)
        return False

    def session_started(self) -> None:
        chan = self._require_chan()
        self._out = ChannelOutput(chan, terminal=self._pty, translate_newlines=self._pty and not self._editor)
        self._main = asyncio.get_running_loop().create_task(self._run(), name="admin shell session")
        self._track(self._main)

    def data_received(self, data: str, datatype: asyncssh.DataType) -> None:
        if self._command is not None:
            return  # a one-shot command reads no input
        if self._editor:
            self._push(data.rstrip("\n"))  # the line editor hands over one whole line at a time
        else:
            for line in self._splitter.feed(data):
                self._push(line)

    def eof_received(self) -> bool:
        if not self._editor:
            for line in self._splitter.finish():
                self._push(line)
        self._push(_EOF)
        return True  # keep the channel open: output and the exit status still go out

    def soft_eof_received(self) -> None:
        self._push(_EOF)  # Ctrl-D on an empty line

    def break_received(self, msec: int) -> bool:
        self._interrupt()
        return True

    def signal_received(self, signal: str) -> None:
        if signal in INTERRUPT_SIGNALS:
            self._interrupt()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._main is not None:
            self._main.cancel()
        self._on_closed()

    # --- the session -------------------------------------------------------------------------------

    def _require_chan(self) -> asyncssh.SSHServerChannel[str]:
        chan = self._chan
        if chan is None:
            raise RuntimeError("the session has no channel yet")
        return chan

    def _require_out(self) -> ChannelOutput:
        out = self._out
        if out is None:
            raise RuntimeError("the session has not started")
        return out

    async def _run(self) -> None:
        chan = self._require_chan()
        try:
            if self._command is not None:
                status = await self._run_one_shot(self._command)
            else:
                status = await self._run_interactive()
        except asyncio.CancelledError:
            return  # the connection is gone; nothing to report to
        except Exception:
            logger.exception("admin shell session of %s failed", self._identity.peer)
            status = EXIT_FAILED
        await self._flush_audit()  # what the client saw finish is in the log before it hears the end
        with contextlib.suppress(asyncssh.Error, OSError):
            chan.exit(status)

    async def _run_one_shot(self, command: str) -> int:
        shell = self._shell_factory(self._identity.role)
        out = self._require_out()
        if len(command) > self._limits.max_command_chars:
            outcome = self._refuse_line(
                command, f"a command is at most {self._limits.max_command_chars} characters"
            )
        elif "\n" in command.strip() or "\r" in command.strip():
            outcome = self._refuse_line(command, "one command per ssh invocation (no newlines)")
        else:
            outcome = await self._execute(shell, command, session="exec")
        out.finish()
        return outcome.exit_status

    def _refuse_line(self, line: str, reason: str) -> Outcome:
        self._require_out().error(f"{reason}\n")
        outcome = Outcome(EXIT_USAGE, f"usage: {reason}")
        self._audit_command(line, outcome, "exec" if self._command is not None else "shell", 0.0)
        return outcome

    async def _run_interactive(self) -> int:
        shell = self._shell = self._shell_factory(self._identity.role)
        out = self._require_out()
        refresh = asyncio.get_running_loop().create_task(shell.refresh_tables(), name="shell tables")
        try:
            if self._editor:
                editor = cast(_LineEditorChannel, self._require_chan())
                editor.register_key("\t", self._complete_key)
            if self._pty and self._banner:
                out.write(self._banner)
            status = EXIT_OK
            while True:
                if self._pty:
                    out.write(shell.prompt)
                line = await self._next_line()
                if isinstance(line, _EndOfInput):
                    if self._pty:
                        out.write("\n")
                    return status if not self._pty else EXIT_OK
                if line is None:
                    outcome = self._refuse_line(
                        "", f"a line is at most {self._limits.max_line_chars} characters"
                    )
                    status = outcome.exit_status
                    continue
                if not line.strip():
                    continue
                outcome = await self._execute(shell, line, session="shell")
                out.finish()
                status = outcome.exit_status
                if outcome.exit_requested:
                    return EXIT_OK
        finally:
            refresh.cancel()
            await asyncio.gather(refresh, return_exceptions=True)

    async def _execute(self, shell: Shell, line: str, *, session: str) -> Outcome:
        """Run one line as a task that Ctrl-C may cancel; audit it. Raises CancelledError only when
        the session itself is cancelled (the connection was lost), after auditing the command."""
        out = self._require_out()
        started = time.monotonic()
        running = asyncio.get_running_loop().create_task(shell.execute(line, out), name="shell command")
        self._running = running
        try:
            await asyncio.wait({running})
        except asyncio.CancelledError:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            outcome = Outcome(EXIT_INTERRUPTED, "interrupted: the connection closed")
            self._audit_command(line, outcome, session, time.monotonic() - started)
            raise
        finally:
            self._running = None
        if running.cancelled():
            out.error("interrupted\n")
            outcome = Outcome(EXIT_INTERRUPTED, "interrupted")
        elif (error := running.exception()) is not None:
            # Shell.execute turns every failure into an Outcome; this is a bug, kept off the terminal.
            logger.error("admin shell command %r failed", line, exc_info=error)
            out.error(f"error: INTERNAL: {type(error).__name__}\n")
            outcome = Outcome(EXIT_FAILED, f"error: INTERNAL: {type(error).__name__}: {error}")
        else:
            outcome = running.result()
        self._audit_command(line, outcome, session, time.monotonic() - started)
        return outcome

    def _audit_command(self, line: str, outcome: Outcome, session: str, elapsed_s: float) -> None:
        identity = self._identity
        self._audit.record(
            AuditEvent.COMMAND,
            user=identity.user,
            fingerprint=identity.fingerprint,
            role=identity.role.value,
            peer=identity.peer,
            session=session,
            command=line.strip(),
            outcome=outcome.summary,
            exit_status=outcome.exit_status,
            duration_ms=round(elapsed_s * 1000),
        )

    async def _flush_audit(self) -> None:
        try:
            async with asyncio.timeout(self._limits.audit_flush_timeout_s):
                await self._audit.flush()
        except TimeoutError:
            logger.error(
                "the audit log did not reach the disk within %.0f s", self._limits.audit_flush_timeout_s
            )

    # --- input --------------------------------------------------------------------------------------

    def _push(self, item: str | _EndOfInput | None) -> None:
        self._inputs.append(item)
        self._input_ready.set()
        if len(self._inputs) >= self._limits.max_queued_lines and not self._reading_paused:
            self._reading_paused = True
            self._require_chan().pause_reading()

    async def _next_line(self) -> str | _EndOfInput | None:
        while not self._inputs:
            self._input_ready.clear()
            await self._input_ready.wait()
        item = self._inputs.popleft()
        if self._reading_paused and len(self._inputs) <= self._limits.max_queued_lines // 2:
            self._reading_paused = False
            self._require_chan().resume_reading()
        return item

    def _interrupt(self) -> None:
        running = self._running
        if running is not None and not running.done():
            running.cancel()
            return
        if self._editor and self._shell is not None and self._out is not None:
            # Ctrl-C at the prompt: drop the line being typed, as a shell does.
            editor = cast(_LineEditorChannel, self._require_chan())
            editor.clear_input()
            self._out.write("^C\n" + self._shell.prompt)

    def _complete_key(self, line: str, cursor: int) -> tuple[str, int] | bool:
        shell = self._shell
        if shell is None or self._running is not None:
            return False  # no completion while a command runs (typed-ahead text stays as typed)
        try:
            candidates = shell.complete(line, cursor)
        except Exception:
            logger.exception("completing %r failed", line)
            return False
        completion = complete_line(line, cursor, candidates)
        if completion is None:
            return False
        if completion.choices:
            self._require_out().write(line + "\n" + format_choices(completion.choices) + shell.prompt)
        return completion.line, completion.cursor
