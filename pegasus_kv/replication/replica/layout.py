"""Where a replica server keeps each replica on disk, and the small files the runtime writes there.

    <data_dir>/replicas/<app_id>.<partition_index>/
        log/            the mutation log (mutation_log.py)
        store/          the partition store (RocksDB, storage/)
        store.new/      a checkpoint being installed (renamed to store/ once complete)
        store.old/      the store a checkpoint install replaced (deleted right after)
        learn/          checkpoints made for learners (ckpt-<decree>-<n>/) and copies being fetched
                        from a primary (incoming-<n>/)
        applied_decree  the decree the store had applied when it was last flushed, closed or replaced
        max_ballot      the highest ballot of any mutation made durable in the log, ever

Why `applied_decree`: RocksDB runs without its WAL (DESIGN.md section 3), so after a crash the store
stands at its last flush, possibly far behind. The replica core rebuilds its prepare list from the
log after the store's decree but holds at most prepare_list_capacity uncommitted entries; what lies
beyond would be forgotten, although it may have been committed. Every decree up to a recorded
applied decree was committed here, and the live log record of a committed decree is the committed
mutation (a replica never logs another version of a decree after committing it). So on start the
runtime re-applies log records up to the recorded decree before handing the rest to the core, which
then only sees the uncommitted tail. Under load that knowledge comes from the log itself: every
record carries the commit point of its replica when it was logged (log_record.py; Pegasus's log
records carry the same), and recovery takes the larger of that and this file. The file covers the
moments the log's records may not: a flush (after which the log is collected), a close and a
checkpoint install.

Why `max_ballot`: a replica's ballot lives in its log, and log collection may delete every record of
the highest ballot. A replica that forgot a ballot it prepared under could be named primary under it
again and hand out a decree twice (ready.py, `persist`; PacificA section 3.3: a ballot is used once).
So the runtime records the highest durable ballot here before it reports a mutation of that ballot
durable, and hands max(recorded, the log's) to ReplicaNode.load_replica on start (Pegasus keeps the
ballot in its replica's `.init-info` file for the same reason).

Both files are written whole to `<name>.tmp`, fsynced and renamed over the old one (then the
directory is fsynced): a crash leaves either the old or the new value, and a torn `.tmp` is never
read.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

from pegasus_kv.core.errors import StorageError
from pegasus_kv.core.ids import Gpid

REPLICAS_DIR = "replicas"
_GPID_DIR = re.compile(r"^(\d{1,10})\.(\d{1,10})$")
APPLIED_DECREE_FILE = "applied_decree"
MAX_BALLOT_FILE = "max_ballot"
DELETING_SUFFIX = ".deleting"
# At most this many replica directories are considered at start (bounded like the node's replicas).
MAX_REPLICA_DIRS = 1_000_000


class ReplicaPaths:
    def __init__(self, data_dir: Path, gpid: Gpid) -> None:
        self.gpid = gpid
        self.root = data_dir / REPLICAS_DIR / f"{gpid.app_id}.{gpid.partition_index}"
        self.log_dir = self.root / "log"
        self.store_dir = self.root / "store"
        self.store_new_dir = self.root / "store.new"
        self.store_old_dir = self.root / "store.old"
        self.learn_dir = self.root / "learn"
        self.applied_decree_file = self.root / APPLIED_DECREE_FILE
        self.max_ballot_file = self.root / MAX_BALLOT_FILE


def replica_gpids_on_disk(data_dir: Path) -> list[Gpid]:
    """Every replica directory under data_dir, in gpid order (blocking: call from a thread)."""
    root = data_dir / REPLICAS_DIR
    if not root.is_dir():
        return []
    gpids = []
    for count, entry in enumerate(sorted(os.listdir(root))):
        if count >= MAX_REPLICA_DIRS:
            raise StorageError(f"more than {MAX_REPLICA_DIRS} entries in {root}")
        match = _GPID_DIR.match(entry)
        if match and (root / entry).is_dir():
            gpids.append(Gpid(int(match.group(1)), int(match.group(2))))
    return sorted(gpids)


def remove_leftovers(data_dir: Path) -> None:
    """Finish deletions a crash interrupted (remove_replica renames before deleting; blocking)."""
    root = data_dir / REPLICAS_DIR
    if not root.is_dir():
        return
    for entry in os.listdir(root):
        if entry.endswith(DELETING_SUFFIX):
            shutil.rmtree(root / entry, ignore_errors=True)


def prepare_fresh(paths: ReplicaPaths) -> None:
    """Make an empty replica directory (blocking). A leftover of the same gpid (a drop interrupted by
    a crash) is removed first: a new replica starts from nothing."""
    shutil.rmtree(paths.root, ignore_errors=True)
    prepare_existing(paths)


def prepare_existing(paths: ReplicaPaths) -> None:
    """Finish an interrupted checkpoint install and create missing subdirectories (blocking).

    A complete `store.new` without `store` means the crash came between the two renames of an
    install: finish it. A `store.new` next to a `store` is an incomplete copy: discard it.
    """
    paths.root.mkdir(parents=True, exist_ok=True)
    if paths.store_new_dir.is_dir():
        if paths.store_dir.exists():
            shutil.rmtree(paths.store_new_dir)
        else:
            os.rename(paths.store_new_dir, paths.store_dir)
    shutil.rmtree(paths.store_old_dir, ignore_errors=True)
    # Copies fetched for learning never survive a restart: the core starts learning afresh.
    shutil.rmtree(paths.learn_dir, ignore_errors=True)
    paths.learn_dir.mkdir(exist_ok=True)
    paths.log_dir.mkdir(exist_ok=True)
    _fsync_dir(paths.root)


def remove_replica(paths: ReplicaPaths) -> None:
    """Delete a replica's data (blocking). Renamed away first so that a crash midway never leaves a
    half-deleted directory that a restart would take for a replica."""
    if not paths.root.exists():
        return
    doomed = paths.root.with_name(paths.root.name + DELETING_SUFFIX)
    shutil.rmtree(doomed, ignore_errors=True)
    os.rename(paths.root, doomed)
    _fsync_dir(paths.root.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def read_applied_decree(paths: ReplicaPaths) -> int:
    """The applied decree recorded last (0 when none was; blocking)."""
    return _read_number(paths.applied_decree_file, "a decree")


def write_applied_decree(paths: ReplicaPaths, decree: int) -> None:
    """Record the applied decree durably and atomically (write, fsync, rename; blocking)."""
    _write_number(paths, paths.applied_decree_file, decree)


class AppliedDecreeFile:
    """One replica's `applied_decree` file, as its runtime writes it from worker threads (blocking).

    A flush and a close may run in different worker threads: the lock keeps their writes of
    `<name>.tmp` apart, and `record` only moves the value forward, so a slower record of an older
    decree never replaces a newer one. `reset` is for a checkpoint install, which replaces the store.
    """

    def __init__(self, paths: ReplicaPaths) -> None:
        self._paths = paths
        self._lock = threading.Lock()
        self._written: int | None = None  # the value this object wrote last

    def record(self, decree: int) -> None:
        with self._lock:
            if self._written is not None and decree <= self._written:
                return
            write_applied_decree(self._paths, decree)
            self._written = decree

    def reset(self, decree: int) -> None:
        with self._lock:
            write_applied_decree(self._paths, decree)
            self._written = decree


def read_max_ballot(paths: ReplicaPaths) -> int:
    """The highest durable ballot recorded last (0 when none was; blocking)."""
    return _read_number(paths.max_ballot_file, "a ballot")


def write_max_ballot(paths: ReplicaPaths, ballot: int) -> None:
    """Record the highest durable ballot durably and atomically (write, fsync, rename; blocking)."""
    _write_number(paths, paths.max_ballot_file, ballot)


def _read_number(path: Path, what: str) -> int:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    if not text.isdigit():
        raise StorageError(f"{path} holds {text!r}, not {what}")
    return int(text)


def _write_number(paths: ReplicaPaths, path: Path, number: int) -> None:
    if number < 0:
        raise StorageError(f"refusing to record {number} in {path}: not a non-negative number")
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "w", encoding="ascii") as handle:
            handle.write(f"{number}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_dir(paths.root)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from exc


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
