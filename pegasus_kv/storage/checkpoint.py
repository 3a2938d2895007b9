"""Checkpoints: a consistent copy of a partition store at a known decree.

`PartitionStore.checkpoint(dest_dir)` flushes and asks RocksDB for a checkpoint (hard links to
the immutable SST files plus copies of the small files), while holding the write lock, so the
copy holds exactly the data of the decree it returns. The decree is inside the copy too (the
apply state record, layout.py), so a checkpoint needs no side file to be understood.

A checkpoint directory is a complete store: `PartitionStore.open(checkpoint_dir)` opens it in
place, and from then on it is that store's live directory (RocksDB writes new files into it).
To keep a checkpoint untouched (a backup being uploaded, several learners fed from one
checkpoint), restore a private copy first with `restore_checkpoint`, which hard-links the SST
files (RocksDB never modifies one) and copies the rest.
"""

from __future__ import annotations

import os
import shutil

from pegasus_kv.core.errors import InvalidArgumentError


def restore_checkpoint(checkpoint_dir: str, dest_dir: str) -> None:
    """Make `dest_dir` (which must not exist) a private copy of a checkpoint, ready to open."""
    if not os.path.isdir(checkpoint_dir):
        raise InvalidArgumentError(f"checkpoint {checkpoint_dir} is not a directory")
    if os.path.exists(dest_dir):
        raise InvalidArgumentError(f"{dest_dir} already exists")
    partial_dir = dest_dir + ".partial"
    shutil.rmtree(partial_dir, ignore_errors=True)
    os.makedirs(partial_dir)
    for name in sorted(os.listdir(checkpoint_dir)):
        source = os.path.join(checkpoint_dir, name)
        target = os.path.join(partial_dir, name)
        if not os.path.isfile(source):
            raise InvalidArgumentError(f"checkpoint {checkpoint_dir} holds a non-file {name}")
        if name.endswith(".sst"):
            try:
                os.link(source, target)
                continue
            except OSError:
                pass  # another file system: copy instead
        shutil.copy2(source, target)
    # The copy appears under its final name only once complete.
    os.rename(partial_dir, dest_dir)
