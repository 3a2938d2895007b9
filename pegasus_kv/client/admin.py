"""The meta server's admin API, as the admin shell and operators' scripts use it.

    async with Client("127.0.0.1:34601") as client:
        info = await client.admin.cluster_info()
        await client.admin.set_meta_level("lively")
        result = await client.admin.balance(Gpid(1, 0), "move_pri", "10.0.0.1:34801", "10.0.0.2:34801")

Every call goes to the meta leader through the client's MetaCaller (redirects, retries within the
deadline). Queries are retried freely; changes are not re-sent after a reply was lost (the outcome
is then reported unknown). Arguments are checked here first, so that a shell user gets an
InvalidArgumentError that says what is wrong instead of a codec error from the server.

`propose` and `balance` return the meta's OperatorProposalResult: a refusal (accepted=False) is an
answer, not an error: its reason says why the change does not apply (wrong primary, dead node, a
move under way, meta level too low ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias, TypeVar

from pegasus_kv.client.meta import MetaCaller
from pegasus_kv.client.session import ClientSession
from pegasus_kv.core.errors import InvalidArgumentError, TableNotFoundError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.meta.admin_messages import ClusterInfoRequest, ClusterInfoResponse
from pegasus_kv.replication.pacifica.config import ConfigType
from pegasus_kv.replication.pacifica.meta_ddl import MAX_ENV_COUNT, check_envs
from pegasus_kv.replication.pacifica.meta_requests import (
    AppEnvsResponse,
    ClearAppEnvsRequest,
    DelAppEnvsRequest,
    GetMetaLevelRequest,
    ListNodesRequest,
    ListNodesResponse,
    ListTablesRequest,
    ListTablesResponse,
    MetaLevelResponse,
    QueryConfigRequest,
    QueryConfigResponse,
    RenameTableRequest,
    RenameTableResponse,
    SetAppEnvsRequest,
    SetMetaLevelRequest,
)
from pegasus_kv.replication.pacifica.meta_types import MetaLevel, NodeInfo
from pegasus_kv.replication.pacifica.operator_messages import (
    PROPOSABLE_BY_OPERATOR,
    BalanceKind,
    OperatorProposalRequest,
    OperatorProposalResponse,
)
from pegasus_kv.replication.transport import parse_address

# What propose / balance return: accepted, reason (why refused, or what meta does next) and config
# (the configuration after the change, or the current one when refused; None: no such partition).
OperatorProposalResult: TypeAlias = OperatorProposalResponse

R = TypeVar("R", bound=Message)


def parse_meta_level(level: MetaLevel | str) -> MetaLevel:
    """A MetaLevel, or a Pegasus level name in any case ("lively", "STEADY", "fl_freezed")."""
    if isinstance(level, MetaLevel):
        return level
    if not isinstance(level, str):
        raise InvalidArgumentError(f"a meta level is a level name, got {level!r}")
    name = level.strip().upper()
    name = name.removeprefix("FL_")
    try:
        return MetaLevel[name]
    except KeyError:
        names = ", ".join(known.name.lower() for known in MetaLevel)
        raise InvalidArgumentError(f"unknown meta level {level!r} (expected one of {names})") from None


def parse_config_type(config_type: ConfigType | str) -> ConfigType:
    """One of the changes an operator may propose, as a ConfigType or its name in any case
    ("assign_primary", or Pegasus's "CT_ASSIGN_PRIMARY")."""
    names = ", ".join(known.name.lower() for known in PROPOSABLE_BY_OPERATOR)
    if isinstance(config_type, ConfigType):
        parsed = config_type
    elif isinstance(config_type, str):
        try:
            parsed = ConfigType[config_type.strip().upper().removeprefix("CT_")]
        except KeyError:
            raise InvalidArgumentError(
                f"unknown config type {config_type!r} (expected one of {names})"
            ) from None
    else:
        raise InvalidArgumentError(f"a config type is a name such as assign_primary, got {config_type!r}")
    if parsed not in PROPOSABLE_BY_OPERATOR:
        raise InvalidArgumentError(f"{parsed.name.lower()} cannot be proposed (expected one of {names})")
    return parsed


def _gpid(gpid: Gpid | str) -> Gpid:
    if isinstance(gpid, Gpid):
        parsed = gpid
    elif isinstance(gpid, str):
        try:
            parsed = Gpid.parse(gpid.strip())
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
    else:
        raise InvalidArgumentError(f"a partition is a Gpid or APP_ID.PARTITION_INDEX, got {gpid!r}")
    if parsed.app_id <= 0 or parsed.partition_index < 0:
        raise InvalidArgumentError(f"no such partition {parsed}: app ids start at 1, indexes at 0")
    return parsed


def _address(what: str, address: object) -> str:
    if not isinstance(address, str):
        raise InvalidArgumentError(f"{what} must be a host:port address, got {address!r}")
    address = address.strip()
    parse_address(address)  # InvalidArgumentError says what is wrong with it
    return address


def _name(what: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"{what} must be a non-empty str, got {name!r}")
    return name


class MetaAdmin:
    """Cluster administration through the meta leader (the client's `admin` property)."""

    def __init__(self, session: ClientSession, meta: MetaCaller) -> None:
        self._session = session
        self._meta = meta

    async def _query(self, request: Message, response_type: type[R], what: str, timeout: float | None) -> R:
        return await self._meta.call(
            request, response_type, deadline=self._session.deadline(timeout), idempotent=True, what=what
        )

    async def _change(self, request: Message, response_type: type[R], what: str, timeout: float | None) -> R:
        return await self._meta.call(
            request, response_type, deadline=self._session.deadline(timeout), idempotent=False, what=what
        )

    # --- cluster ---------------------------------------------------------------------------------

    async def cluster_info(self, *, timeout: float | None = None) -> ClusterInfoResponse:
        return await self._query(ClusterInfoRequest(), ClusterInfoResponse, "cluster info", timeout)

    async def list_nodes(self, *, timeout: float | None = None) -> list[NodeInfo]:
        reply = await self._query(ListNodesRequest(), ListNodesResponse, "list nodes", timeout)
        return list(reply.nodes)

    async def get_meta_level(self, *, timeout: float | None = None) -> MetaLevelResponse:
        return await self._query(GetMetaLevelRequest(), MetaLevelResponse, "get meta level", timeout)

    async def set_meta_level(
        self, level: MetaLevel | str, *, timeout: float | None = None
    ) -> MetaLevelResponse:
        parsed = parse_meta_level(level)
        return await self._change(
            SetMetaLevelRequest(parsed), MetaLevelResponse, f"set meta level {parsed.name.lower()}", timeout
        )

    # --- tables ----------------------------------------------------------------------------------

    async def query_config(self, name: str, *, timeout: float | None = None) -> QueryConfigResponse:
        """The partition configurations of an available table (TableNotFoundError otherwise)."""
        name = _name("a table name", name)
        return await self._query(
            QueryConfigRequest(name), QueryConfigResponse, f"query table {name!r}", timeout
        )

    async def rename_table(self, old_name: str, new_name: str, *, timeout: float | None = None) -> None:
        old_name = _name("the table's name", old_name)
        new_name = _name("the new name", new_name)
        await self._change(
            RenameTableRequest(old_name, new_name),
            RenameTableResponse,
            f"rename table {old_name!r} to {new_name!r}",
            timeout,
        )

    async def get_app_envs(self, name: str, *, timeout: float | None = None) -> dict[str, str]:
        """The envs of an available table (read from the table list: meta has no request of its own)."""
        name = _name("a table name", name)
        reply = await self._query(ListTablesRequest(False), ListTablesResponse, "list tables", timeout)
        for table in reply.tables:
            if table.name == name:
                return dict(table.envs)
        raise TableNotFoundError(f"no table {name!r}")

    async def set_app_envs(
        self, name: str, envs: Mapping[str, str], *, timeout: float | None = None
    ) -> dict[str, str]:
        """Set (add or overwrite) envs; returns the table's envs after the change."""
        name = _name("a table name", name)
        if not isinstance(envs, Mapping) or not envs:
            raise InvalidArgumentError("set_app_envs needs at least one key=value")
        for key, value in envs.items():
            if not isinstance(key, str) or not key or not isinstance(value, str):
                raise InvalidArgumentError(f"an app env is a non-empty str key and a str value, got {key!r}")
        wanted = dict(envs)
        check_envs(wanted)
        reply = await self._change(
            SetAppEnvsRequest(name, wanted), AppEnvsResponse, f"set app envs of {name!r}", timeout
        )
        return dict(reply.envs)

    async def del_app_envs(
        self, name: str, keys: Sequence[str], *, timeout: float | None = None
    ) -> dict[str, str]:
        """Delete envs by key (missing keys are ignored); returns the table's envs after the change."""
        name = _name("a table name", name)
        if isinstance(keys, str) or not isinstance(keys, Sequence) or not keys:
            raise InvalidArgumentError("del_app_envs needs a list of at least one key")
        if len(keys) > MAX_ENV_COUNT:
            raise InvalidArgumentError(f"at most {MAX_ENV_COUNT} keys at once (a table has no more envs)")
        wanted = [_name("an app env key", key) for key in keys]
        reply = await self._change(
            DelAppEnvsRequest(name, wanted), AppEnvsResponse, f"delete app envs of {name!r}", timeout
        )
        return dict(reply.envs)

    async def clear_app_envs(
        self, name: str, prefix: str = "", *, timeout: float | None = None
    ) -> dict[str, str]:
        """Delete every env whose key starts with `prefix` (all of them when empty); returns the
        table's envs after the change."""
        name = _name("a table name", name)
        if not isinstance(prefix, str):
            raise InvalidArgumentError(f"a prefix is a str, got {prefix!r}")
        reply = await self._change(
            ClearAppEnvsRequest(name, prefix), AppEnvsResponse, f"clear app envs of {name!r}", timeout
        )
        return dict(reply.envs)

    # --- configuration proposals -----------------------------------------------------------------

    async def propose(
        self,
        gpid: Gpid | str,
        config_type: ConfigType | str,
        node: str,
        *,
        target: str | None = None,
        timeout: float | None = None,
    ) -> OperatorProposalResult:
        """Pegasus `propose`: config_type (assign_primary, add_secondary, downgrade_to_secondary,
        downgrade_to_inactive) on `node`. `target`, if given, must be the node meta sends the change
        to (the primary; `node` itself for assign_primary)."""
        parsed_gpid = _gpid(gpid)
        parsed_type = parse_config_type(config_type)
        request = OperatorProposalRequest(
            parsed_gpid,
            config_type=parsed_type,
            node=_address("node", node),
            target="" if target is None else _address("target", target),
        )
        return await self._change(
            request,
            OperatorProposalResponse,
            f"propose {parsed_type.name.lower()} {node} on {parsed_gpid}",
            timeout,
        )

    async def balance(
        self,
        gpid: Gpid | str,
        kind: BalanceKind | str,
        from_node: str,
        to_node: str,
        *,
        timeout: float | None = None,
    ) -> OperatorProposalResult:
        """Pegasus `balance`: kind move_pri (from the primary to a secondary), copy_pri (the
        primary's replica to a node outside the group) or copy_sec (a secondary's replica to a node
        outside the group). Accepted means the move has started: it completes over the next ticks."""
        parsed_gpid = _gpid(gpid)
        parsed_kind = (
            kind if isinstance(kind, BalanceKind) else BalanceKind.parse(_name("a balance kind", kind))
        )
        source = _address("from node", from_node)
        destination = _address("to node", to_node)
        if source == destination:
            raise InvalidArgumentError(f"balance from and to are the same node {source}")
        request = OperatorProposalRequest(
            parsed_gpid, balance=parsed_kind, from_node=source, to_node=destination
        )
        return await self._change(
            request,
            OperatorProposalResponse,
            f"balance {parsed_kind.name.lower()} of {parsed_gpid} from {source} to {destination}",
            timeout,
        )
