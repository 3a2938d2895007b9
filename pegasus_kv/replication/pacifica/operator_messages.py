"""Operator-driven configuration changes: Pegasus shell `propose` and `balance` (wire ids 271-272).

One request carries either form:
- `propose`: a raw configuration change, `config_type` on `node` (Pegasus `propose -g GPID -p TYPE
  -n NODE [-t TARGET]`). `target` is the node Pegasus would send the command to (the primary; the
  node itself for ASSIGN_PRIMARY); when given, meta checks that it is that node.
- `balance`: move one replica by hand (Pegasus `balance -g GPID -p move_pri|copy_pri|copy_sec -f
  FROM -t TO`).

Meta answers every well-formed request with OperatorProposalResponse: accepted or not, and why
(operator_proposals.py decides). A malformed request (neither or both forms, an empty address) gets
an ErrorReply with INVALID_ARGUMENT instead.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message, message
from pegasus_kv.replication.pacifica.config import ConfigType, PartitionConfiguration

# Decode-time bound on an address (a DNS name and a port fit well inside).
Address = Annotated[str, msgspec.Meta(max_length=512)]


class BalanceKind(enum.IntEnum):
    """What `balance` moves (Pegasus balance_type)."""

    MOVE_PRI = 0  # the primary role moves from FROM (the primary) to TO (a secondary); no data moves
    COPY_PRI = 1  # the primary's replica moves from FROM (the primary) to TO (a node outside the group)
    COPY_SEC = 2  # a secondary's replica moves from FROM (a secondary) to TO (a node outside the group)

    @classmethod
    def parse(cls, text: str) -> BalanceKind:
        """The shell's lower-case names, case-insensitively: move_pri, copy_pri, copy_sec."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(kind.name.lower() for kind in cls)
            raise InvalidArgumentError(f"unknown balance kind {text!r} (expected one of {names})") from None


# The config types an operator may `propose` (the others are made by replicas or by meta itself).
PROPOSABLE_BY_OPERATOR = (
    ConfigType.ASSIGN_PRIMARY,
    ConfigType.ADD_SECONDARY,
    ConfigType.DOWNGRADE_TO_SECONDARY,
    ConfigType.DOWNGRADE_TO_INACTIVE,
)


@message
class OperatorProposalRequest(Message, tag=271):
    gpid: Gpid
    # `propose`: config_type on node, optionally naming the target (checked).
    config_type: ConfigType | None = None
    node: Address = ""
    target: Address = ""
    # `balance`: kind, from_node -> to_node.
    balance: BalanceKind | None = None
    from_node: Address = ""
    to_node: Address = ""


@message
class OperatorProposalResponse(Message, tag=272):
    accepted: bool
    # Refused: why. Accepted: what meta does next (the rest of a move happens over later ticks).
    reason: str
    # Accepted: the configuration the change produced (durable when this reply is sent). Refused:
    # the partition's durable configuration; None when there is no such partition.
    config: PartitionConfiguration | None = None
