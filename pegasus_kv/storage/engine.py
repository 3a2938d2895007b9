"""The only module that talks to rocksdict: opening, point reads, batches, iterators, flush,
checkpoints. RocksDB errors are translated here, once, into StorageError (or ShuttingDownError
when the database was closed under a reader); `get_untranslated` alone leaves that to its caller
(PartitionStore.read, which translates the same way around every read).

Facts about rocksdict 0.3.29 (RocksDB 9.8.4) this module relies on, each checked by experiment:
- raw mode stores bytes as they are (no pickling);
- `ReadOptions.set_iterate_upper_bound` works; `set_iterate_lower_bound` does not bound anything
  (it replaces the upper bound), so lower bounds are checked by the callers, key by key;
- `Rdict.flush()` flushes one column family only, even with atomic_flush (see layout.py);
- `Checkpoint.create_checkpoint` flushes memtables first, so a checkpoint holds everything
  applied even with the WAL off;
- an open iterator or column-family handle keeps the database (and its LOCK file) alive after
  `close()`: iterators live only inside `iterate()` blocks;
- an iterator does not keep its ReadOptions' upper bound alive (`iterate` does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import rocksdict

from pegasus_kv.core.errors import PegasusError, ShuttingDownError, StorageError
from pegasus_kv.storage.layout import META_COLUMN_FAMILY


class WriteBatch(Protocol):
    """The part of rocksdict's WriteBatch the writers use."""

    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...


class RawIterator(Protocol):
    """The part of rocksdict's RdictIter the readers use (keys and values are bytes)."""

    def valid(self) -> bool: ...
    def key(self) -> bytes: ...
    def value(self) -> bytes: ...
    def next(self) -> None: ...
    def prev(self) -> None: ...
    def seek(self, key: bytes) -> None: ...
    def seek_for_prev(self, key: bytes) -> None: ...


class WriteStall(Exception):
    """A write made with `no_slowdown` that RocksDB would have stalled (or slowed down): nothing of
    it was written. The caller retries it where waiting is allowed (a worker thread)."""


# RocksDB's status for a write refused under WriteOptions.no_slowdown is Incomplete("Write stall"),
# which rocksdict raises as a bare Exception carrying Status::ToString().
_WRITE_STALL_TEXT = "Write stall"


def is_rocksdb_error(exc: BaseException) -> bool:
    """rocksdict raises a bare Exception for RocksDB statuses and DbClosedError after close."""
    return type(exc) is Exception or isinstance(exc, rocksdict.DbClosedError)


def translate(exc: BaseException, what: str) -> PegasusError:
    if isinstance(exc, rocksdict.DbClosedError):
        return ShuttingDownError(f"{what}: the store is closed")
    return StorageError(f"{what}: {exc}")


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise RocksDB's errors inside the block as typed PegasusErrors (the cold paths)."""
    try:
        yield
    except Exception as exc:
        if is_rocksdb_error(exc):
            raise translate(exc, what) from exc
        raise


def _data_options(write_buffer_bytes: int) -> Any:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    options.set_write_buffer_size(write_buffer_bytes)
    return options


class Engine:
    def __init__(self, db: Any, path: str) -> None:
        self._db = db
        self.path = path
        write_options = rocksdict.WriteOptions()
        # The mutation log is the WAL (DESIGN.md section 3); durability comes from flush().
        # rocksdict's stub declares disable_wal a method; at runtime it is a bool property.
        write_options.disable_wal = True  # type: ignore[method-assign,assignment]
        self._write_options = write_options
        db.set_write_options(write_options)
        # For writes on a thread that must not wait (the server's event loop): refused, not stalled.
        no_slowdown = rocksdict.WriteOptions()
        no_slowdown.disable_wal = True  # type: ignore[method-assign,assignment]
        no_slowdown.no_slowdown = True
        self._no_slowdown_options = no_slowdown
        # get_untranslated(key) -> bytes | None: rocksdict's own get, for a caller that translates
        # RocksDB's errors itself (PartitionStore.read, around every read): a Python call less per
        # point read than `get`.
        self.get_untranslated = db.get

    @classmethod
    def open(cls, path: str, *, write_buffer_bytes: int) -> Engine:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with translated(f"open {path}"):
            db = rocksdict.Rdict(
                path,
                _data_options(write_buffer_bytes),
                column_families={META_COLUMN_FAMILY: rocksdict.Options(raw_mode=True)},
            )
        return cls(db, path)

    # --- point reads (hot paths: the try blocks are inline) -----------------------------------

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
        except Exception as exc:
            if is_rocksdb_error(exc):
                raise translate(exc, "get") from exc
            raise
        return value

    def multi_get(self, keys: list[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            values: list[bytes | None] = self._db.get(keys)
        except Exception as exc:
            if is_rocksdb_error(exc):
                raise translate(exc, "multi_get") from exc
            raise
        return values

    @contextmanager
    def iterate(self, upper_bound: bytes | None = None) -> Iterator[RawIterator]:
        """A new iterator for the duration of a `with` block.

        `upper_bound` (exclusive) lets RocksDB stop early. rocksdict does not keep the bound
        alive for the iterator: freeing the ReadOptions and the bound bytes while the iterator
        runs makes it read freed memory (we saw it stop at once). This frame holds both until
        the block ends, and drops the iterator then (an iterator keeps the database open).
        """
        read_options = rocksdict.ReadOptions()
        if upper_bound is not None:
            read_options.set_iterate_upper_bound(upper_bound)
        with translated("iterator"):
            iterator: RawIterator = self._db.iter(read_options)
        try:
            yield iterator
        finally:
            del iterator
            del read_options
            del upper_bound

    # --- writes -------------------------------------------------------------------------------

    def new_batch(self) -> WriteBatch:
        """An empty WriteBatch for `commit`; it applies atomically, in the order of its calls."""
        batch: WriteBatch = rocksdict.WriteBatch(raw_mode=True)
        return batch

    def commit(self, batch: WriteBatch, *, no_slowdown: bool = False) -> None:
        """Write the batch atomically. With no_slowdown, a write RocksDB would stall or slow down
        raises WriteStall instead, having written nothing."""
        try:
            if no_slowdown:
                self._db.write(batch, self._no_slowdown_options)
            else:
                self._db.write(batch)
        except Exception as exc:
            if is_rocksdb_error(exc):
                if no_slowdown and _WRITE_STALL_TEXT in str(exc):
                    raise WriteStall(str(exc)) from exc
                raise translate(exc, "write batch") from exc
            raise

    def delete_all(self, keys: list[bytes]) -> None:
        batch = self.new_batch()
        for key in keys:
            batch.delete(key)
        self.commit(batch)

    # --- metadata column family ---------------------------------------------------------------

    def get_meta(self, key: bytes) -> bytes | None:
        with translated("read metadata"):
            family = self._db.get_column_family(META_COLUMN_FAMILY)
            try:
                value: bytes | None = family.get(key)
            finally:
                del family  # a column-family handle keeps the database open
        return value

    def put_meta_durably(self, key: bytes, value: bytes) -> None:
        with translated("write metadata"):
            family = self._db.get_column_family(META_COLUMN_FAMILY)
            try:
                family.put(key, value, self._write_options)
                family.flush(True)
            finally:
                del family

    # --- durability ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Make every write applied so far durable (the data column family holds all of them)."""
        with translated("flush"):
            self._db.flush(True)

    def checkpoint(self, dest_dir: str) -> None:
        with translated(f"checkpoint to {dest_dir}"):
            rocksdict.Checkpoint(self._db).create_checkpoint(dest_dir)

    def close(self) -> None:
        with translated("close"):
            self._db.close()
