"""Address fields shared by the server config models (meta and replica).

`AdvertisedAddress` is "" or a "host:port" (host may be a DNS name); `MetaServerList` is a list of
such addresses that an environment override may also give as one comma-separated string.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.replication.transport import parse_address

MAX_META_SERVERS = 64


def check_address(address: str) -> str:
    try:
        parse_address(address)
    except InvalidArgumentError as exc:
        raise ValueError(exc.message) from exc
    return address


def _check_optional_address(address: str) -> str:
    return check_address(address) if address else address


def _split_comma_list(value: object) -> object:
    if isinstance(value, str):  # from an environment override
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _check_meta_servers(addresses: list[str]) -> list[str]:
    if len(addresses) > MAX_META_SERVERS:
        raise ValueError(f"at most {MAX_META_SERVERS} meta servers")
    for address in addresses:
        check_address(address)
    return addresses


AdvertisedAddress = Annotated[str, AfterValidator(_check_optional_address)]
MetaServerList = Annotated[list[str], BeforeValidator(_split_comma_list), AfterValidator(_check_meta_servers)]
