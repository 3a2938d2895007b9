"""The partition store over rocksdict: applies mutations, serves reads (DESIGN.md section 3).

Public API: PartitionStore, StoreOptions, SweepResult, WriteStall, restore_checkpoint.
"""

from pegasus_kv.storage.checkpoint import restore_checkpoint
from pegasus_kv.storage.engine import WriteStall
from pegasus_kv.storage.options import StoreOptions
from pegasus_kv.storage.store import PartitionStore
from pegasus_kv.storage.sweep import SweepResult

__all__ = ["PartitionStore", "StoreOptions", "SweepResult", "WriteStall", "restore_checkpoint"]
