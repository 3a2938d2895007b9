"""The admin shell's audit log: one JSON line per command, per refused login and per refused request.

    audit = AuditLog(Path("meta-data/audit.log"), max_bytes=16 << 20, backups=3)
    audit.start()                                     # on the running loop
    audit.record(AuditEvent.COMMAND, user="admin", fingerprint="SHA256:...", peer="10.0.0.7:51514",
                 role="admin", command="ls --json", outcome="ok", exit_status=0, duration_ms=12)
    await audit.flush()                               # everything recorded so far is on disk
    await audit.close()

A line looks like

    {"time": "2024-05-01T12:00:00.123456+00:00", "event": "command", "user": "admin",
     "fingerprint": "SHA256:...", "role": "admin", "peer": "127.0.0.1:51514", "command": "ls --json",
     "outcome": "ok", "exit_status": 0, "duration_ms": 12}

`record` never blocks: it appends to a bounded in-memory queue, and one writer task hands batches to
a worker thread that appends, flushes and fsyncs them, so the event loop never waits on the disk. A
session sends its exit status only after `flush` returned, so the commands of a session the client
saw end are in the log. When the queue is full (the disk stalled) new records are dropped and counted;
the next write says how many were lost. The file rotates when it would grow past max_bytes:
audit.log becomes audit.log.1, audit.log.1 becomes audit.log.2, ..., keeping `backups` old files.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import json
import logging
import os
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

MAX_PENDING_RECORDS = 10_000
MAX_BATCH_RECORDS = 1000
MAX_FIELD_CHARS = 4096  # a command line longer than this is cut in the log (and marked)
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_BACKUPS = 3
MAX_BACKUPS = 100
FILE_MODE = 0o600  # command lines carry keys and values


class AuditEvent(enum.Enum):
    COMMAND = "command"  # a command ran (one-shot or interactive)
    AUTH_REFUSED = "auth_refused"  # a connection ended without an authorized key
    REQUEST_REFUSED = "request_refused"  # forwarding, agent, X11, subsystem, env, too many sessions
    DROPPED = "audit_dropped"  # records lost while the queue was full


def _clip(text: str) -> str:
    if len(text) <= MAX_FIELD_CHARS:
        return text
    return text[:MAX_FIELD_CHARS] + f"...[{len(text) - MAX_FIELD_CHARS} more characters]"


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


class AuditLog:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
        max_pending: int = MAX_PENDING_RECORDS,
    ) -> None:
        if max_bytes < 1024:
            raise ValueError("an audit log needs max_bytes >= 1024")
        if not 0 <= backups <= MAX_BACKUPS:
            raise ValueError(f"audit log backups must be 0..{MAX_BACKUPS}")
        self.path = path
        self._max_bytes = max_bytes
        self._backups = backups
        self._max_pending = max_pending
        self._pending: list[bytes] = []
        self._recorded = 0  # records accepted so far (sequence numbers)
        self._written = 0  # records handled by the writer so far (on disk, or lost to a disk error)
        self.dropped = 0  # records refused because the queue was full
        self._dropped_unreported = 0
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Condition()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._stopped = False  # the writer task has finished (closed, or failed)
        self._file: BinaryIO | None = None  # touched by the worker thread only (one batch at a time)

    def start(self) -> None:
        if self._writer is not None:
            raise RuntimeError("an audit log starts once")
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="audit log writer")

    def record(self, event: AuditEvent, **fields: str | int | None) -> None:
        """Queue one line: time and event first, then `fields` in order. Never blocks."""
        if self._closing:
            logger.warning("audit record after close, not written: %s %s", event.value, fields)
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            self._dropped_unreported += 1
            return
        line: dict[str, str | int | None] = {"time": _now_iso(), "event": event.value}
        for name, value in fields.items():
            line[name] = _clip(value) if isinstance(value, str) else value
        self._pending.append(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        self._recorded += 1
        self._wakeup.set()

    async def flush(self) -> None:
        """Return once every record accepted before the call has been handed to the disk."""
        target = self._recorded
        if self._writer is None or self._stopped:
            return
        async with self._progress:
            await self._progress.wait_for(lambda: self._written >= target or self._stopped)

    async def close(self) -> None:
        """Write what is queued, then stop the writer and close the file."""
        self._closing = True
        self._wakeup.set()
        writer = self._writer
        if writer is not None:
            await asyncio.gather(writer, return_exceptions=True)
        if self._file is not None:
            await asyncio.to_thread(self._close_file)

    async def _write_loop(self) -> None:
        try:
            await self._drain_until_closed()
        finally:
            self._stopped = True
            async with self._progress:  # wake flush() callers even if the writer failed
                self._progress.notify_all()

    async def _drain_until_closed(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending or self._dropped_unreported:
                batch = self._pending[:MAX_BATCH_RECORDS]
                del self._pending[:MAX_BATCH_RECORDS]
                data = b"".join(batch)
                if self._dropped_unreported:
                    lost = {
                        "time": _now_iso(),
                        "event": AuditEvent.DROPPED.value,
                        "count": self._dropped_unreported,
                    }
                    data += json.dumps(lost).encode("utf-8") + b"\n"
                    self._dropped_unreported = 0
                try:
                    await asyncio.to_thread(self._append, data)
                except OSError as exc:
                    logger.error("audit log %s: %d records not written: %s", self.path, len(batch), exc)
                    with contextlib.suppress(OSError):
                        await asyncio.to_thread(self._close_file)
                async with self._progress:
                    self._written += len(batch)
                    self._progress.notify_all()
            if self._closing:
                return

    # --- the worker thread's part (one call at a time) ----------------------------------------

    def _append(self, data: bytes) -> None:
        handle = self._open()
        size = handle.tell()
        if size > 0 and size + len(data) > self._max_bytes:
            self._close_file()
            self._rotate()
            handle = self._open()
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            self._file = os.fdopen(descriptor, "ab")
        return self._file

    def _close_file(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            handle.close()

    def _rotate(self) -> None:
        if self._backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for index in range(self._backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
