"""Label values from the domain: an operation's name from its request type, an error's code.

    op_label(SetRequest)           -> "set"
    op_label(CheckAndSetRequest)   -> "check_and_set"
    op_label(ConfigSyncRequest)    -> "config_sync"
    error_code_label(BusyError())  -> "busy"

Label values come only from closed sets (message types, error codes, partition roles, config
types, table names) so that every metric's series count stays bounded.
"""

from __future__ import annotations

import asyncio
import re

from pegasus_kv.core.errors import ErrorCode, PegasusError

_WORD_START = re.compile(r"(?<!^)(?=[A-Z])")
_REQUEST_SUFFIX = "Request"


def snake_case(name: str) -> str:
    """CheckAndSet -> check_and_set."""
    return _WORD_START.sub("_", name).lower()


def op_label(message_type: type) -> str:
    """The operation a request type stands for, in snake case and without the "Request" suffix."""
    name = message_type.__name__
    if name.endswith(_REQUEST_SUFFIX) and len(name) > len(_REQUEST_SUFFIX):
        name = name[: -len(_REQUEST_SUFFIX)]
    return snake_case(name)


def error_code_label(error: BaseException) -> str:
    """The code a client gets for `error`, as the RPC server answers it (rpc_server.py _fail):
    a PegasusError's own code, SHUTTING_DOWN for a cancelled request, INTERNAL for anything else."""
    if isinstance(error, PegasusError):
        code = error.code
    elif isinstance(error, asyncio.CancelledError):
        code = ErrorCode.SHUTTING_DOWN
    else:
        code = ErrorCode.INTERNAL
    return code.name.lower()
