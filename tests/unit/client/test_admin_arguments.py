"""`client.admin` checks what an operator typed before anything goes to meta, and says what is wrong.

The client below points at a port nobody listens on: every call here must fail on its arguments,
never on the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pegasus_kv.client import Client
from pegasus_kv.client.admin import MetaAdmin, parse_config_type, parse_meta_level
from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import ConfigType
from pegasus_kv.replication.pacifica.meta_types import MetaLevel

NOBODY = "127.0.0.1:1"
N1, N2 = "10.0.0.1:34801", "10.0.0.2:34801"


def test_pegasus_level_names_are_accepted_in_any_case() -> None:
    assert parse_meta_level("lively") == MetaLevel.LIVELY
    assert parse_meta_level("STEADY") == MetaLevel.STEADY
    assert parse_meta_level(" Freezed ") == MetaLevel.FREEZED
    assert parse_meta_level("fl_blind") == MetaLevel.BLIND
    assert parse_meta_level(MetaLevel.STOPPED) == MetaLevel.STOPPED
    with pytest.raises(InvalidArgumentError, match=r"unknown meta level 'turbo' .*lively"):
        parse_meta_level("turbo")
    with pytest.raises(InvalidArgumentError):
        parse_meta_level(4)  # type: ignore[arg-type]


def test_only_the_four_operator_changes_can_be_proposed() -> None:
    assert parse_config_type("assign_primary") == ConfigType.ASSIGN_PRIMARY
    assert parse_config_type("CT_DOWNGRADE_TO_INACTIVE") == ConfigType.DOWNGRADE_TO_INACTIVE
    assert parse_config_type(ConfigType.ADD_SECONDARY) == ConfigType.ADD_SECONDARY
    with pytest.raises(InvalidArgumentError, match="upgrade_to_secondary cannot be proposed"):
        parse_config_type("upgrade_to_secondary")
    with pytest.raises(InvalidArgumentError, match="unknown config type"):
        parse_config_type("promote")


def _fails_on_arguments(call: Callable[[MetaAdmin], Awaitable[Any]], message: str) -> None:
    async def story() -> None:
        async with Client(NOBODY, timeout=2.0) as client:
            with pytest.raises(InvalidArgumentError, match=message):
                await call(client.admin)

    asyncio.run(asyncio.wait_for(story(), timeout=5.0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda admin: admin.balance(Gpid(1, 0), "move_secondary", N1, N2), "unknown balance kind"),
        (lambda admin: admin.balance(Gpid(1, 0), "move_pri", N1, N1), "the same node"),
        (lambda admin: admin.balance(Gpid(1, 0), "move_pri", "10.0.0.1", N2), "expected host:port"),
        (lambda admin: admin.balance("one.two", "copy_sec", N1, N2), "not a gpid"),
        (lambda admin: admin.balance(Gpid(0, 0), "copy_sec", N1, N2), "app ids start at 1"),
        (lambda admin: admin.propose(Gpid(1, 0), "remove", N1), "cannot be proposed"),
        (
            lambda admin: admin.propose(Gpid(1, 0), "add_secondary", N1, target="primary"),
            "expected host:port",
        ),
        (lambda admin: admin.set_meta_level("warp"), "unknown meta level"),
        (lambda admin: admin.set_app_envs("temp", {}), "at least one key=value"),
        (lambda admin: admin.set_app_envs("temp", {"k": 1}), "str value"),
        (lambda admin: admin.del_app_envs("temp", "k"), "a list of at least one key"),
        (lambda admin: admin.rename_table("temp", ""), "the new name must be a non-empty str"),
        (lambda admin: admin.query_config(""), "a table name must be a non-empty str"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_sent(
    call: Callable[[MetaAdmin], Awaitable[Any]], message: str
) -> None:
    _fails_on_arguments(call, message)
