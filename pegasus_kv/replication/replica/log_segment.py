"""One segment file of a mutation log: its name, its size, and the decrees physically inside it.

Segments are named `mlog.<seq>.<first decree>`: the sequence number orders them (decrees alone
cannot, because a decree may be logged again under a higher ballot in a later segment), and the
first decree tells an operator where each one starts.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
from pathlib import Path

from pegasus_kv.core.errors import StorageError
from pegasus_kv.core.ids import INVALID_DECREE

SEGMENT_NAME = re.compile(r"^mlog\.(\d{10})\.(\d{1,20})$")


def segment_file_name(seq: int, first_decree: int) -> str:
    return f"mlog.{seq:010d}.{first_decree}"


def parse_segment_file_name(name: str) -> tuple[int, int] | None:
    """(seq, first decree) of a segment file name, None for any other file."""
    match = SEGMENT_NAME.match(name)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


@dataclasses.dataclass(slots=True)
class Segment:
    seq: int
    first_decree: int
    path: Path
    size_bytes: int = 0
    # Over every record in the file, live or superseded: garbage collection deletes a segment only
    # when even its highest decree lies below the checkpoint.
    min_decree: int = INVALID_DECREE
    max_decree: int = INVALID_DECREE
    record_count: int = 0

    def note_record(self, decree: int, size_bytes: int) -> None:
        self.size_bytes += size_bytes
        self.record_count += 1
        self.max_decree = max(self.max_decree, decree)
        self.min_decree = decree if self.min_decree == INVALID_DECREE else min(self.min_decree, decree)


def fsync_directory(directory: Path) -> None:
    """Make a created, renamed or deleted directory entry durable (POSIX needs the directory fsynced)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write may write less than asked: loop until every byte is in."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_exactly(fd: int, size: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = os.pread(fd, remaining, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def lock_directory(directory: Path, lock_file_name: str, what: str) -> int:
    """Create `directory` if needed and take an exclusive flock on its lock file: one process owns a
    log at a time. Returns the lock's descriptor (closing it releases the lock); StorageError when
    the directory cannot be opened or another process holds it. `what` names the log in errors."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(directory / lock_file_name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open {what} directory {directory}: {exc}") from exc
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(lock_fd)
        raise StorageError(f"{what} {directory} is in use by another process") from exc
    return lock_fd
