"""The async client (DESIGN.md section 7): routing by hash, retries, scans that survive failover.

Public API: Client, ClientOptions, Table, Scanner, Filter, Mutations, MultiGetResult,
CheckAndSetResult, CheckAndMutateResult.
"""

from pegasus_kv.client.client import Client
from pegasus_kv.client.options import ClientOptions
from pegasus_kv.client.scanner import Scanner
from pegasus_kv.client.table import Table
from pegasus_kv.client.values import (
    CheckAndMutateResult,
    CheckAndSetResult,
    Filter,
    MultiGetResult,
    Mutations,
)

__all__ = [
    "CheckAndMutateResult",
    "CheckAndSetResult",
    "Client",
    "ClientOptions",
    "Filter",
    "MultiGetResult",
    "Mutations",
    "Scanner",
    "Table",
]
