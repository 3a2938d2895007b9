"""pegasus-kv: a distributed, strongly consistent key-value store modelled on Apache Pegasus."""

from typing import TYPE_CHECKING, Any

from pegasus_kv.core.errors import (
    BusyError,
    ErrorCode,
    InvalidArgumentError,
    KeyTooLargeError,
    NetworkError,
    NotPrimaryError,
    PegasusError,
    PegasusTimeoutError,
    ShuttingDownError,
    TableExistsError,
    TableNotFoundError,
    ValueTooLargeError,
)
from pegasus_kv.core.messages import CheckType, FilterType

if TYPE_CHECKING:
    from pegasus_kv.client import (
        CheckAndMutateResult,
        CheckAndSetResult,
        Client,
        ClientOptions,
        Filter,
        MultiGetResult,
        Mutations,
        Scanner,
        Table,
    )

# The client pulls in asyncio and the transport; it is imported on first use, so that code which
# only needs the core vocabulary (`import pegasus_kv.core.ids`) does not load it.
_CLIENT_NAMES = frozenset(
    {
        "CheckAndMutateResult",
        "CheckAndSetResult",
        "Client",
        "ClientOptions",
        "Filter",
        "MultiGetResult",
        "Mutations",
        "Scanner",
        "Table",
    }
)


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from pegasus_kv import client

        return getattr(client, name)
    raise AttributeError(f"module 'pegasus_kv' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "BusyError",
    "CheckAndMutateResult",
    "CheckAndSetResult",
    "CheckType",
    "Client",
    "ClientOptions",
    "ErrorCode",
    "Filter",
    "FilterType",
    "InvalidArgumentError",
    "KeyTooLargeError",
    "MultiGetResult",
    "Mutations",
    "NetworkError",
    "NotPrimaryError",
    "PegasusError",
    "PegasusTimeoutError",
    "Scanner",
    "ShuttingDownError",
    "Table",
    "TableExistsError",
    "TableNotFoundError",
    "ValueTooLargeError",
    "__version__",
]
