"""The registry of wire message types.

Every message is a msgspec Struct with a unique integer tag (its type id): the frame names the type
by that id and carries the body as msgpack, so modules add their own messages (client data API,
replication, meta) without editing a central union. Type ids are part of the wire protocol: never
reuse one.

Ranges: 1-99 client data API, 100-199 replication (PacificA), 200-299 meta, 300-399 shell/admin,
400-499 duplication and backup.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec


class Message(msgspec.Struct, array_like=True):
    """Base of every wire message. Subclasses pass `tag=N` and are registered with @message."""


M = TypeVar("M", bound=type[Message])

_TYPES: dict[int, type[Message]] = {}


def type_id_of(cls: type[Message]) -> int:
    tag = cls.__struct_config__.tag
    if not isinstance(tag, int) or tag <= 0:
        raise TypeError(f"{cls.__name__} needs a positive integer tag (its wire type id)")
    return tag


def message(cls: M) -> M:
    """Class decorator: register a message type under its tag."""
    type_id = type_id_of(cls)
    if type_id in _TYPES and _TYPES[type_id] is not cls:
        raise TypeError(f"type id {type_id} of {cls.__name__} is taken by {_TYPES[type_id].__name__}")
    _TYPES[type_id] = cls
    return cls


def message_type(type_id: int) -> type[Message] | None:
    return _TYPES.get(type_id)


def registered_types() -> dict[int, type[Message]]:
    return dict(_TYPES)
