"""Requests to the meta servers: find the leader, follow its redirects, retry within the deadline.

Several metas may run, one of them the leader (DESIGN.md section 5). A meta that is not the
leader answers NotLeaderError whose message is exactly the leader's `host:port` (or anything that
is not an address when it does not know the leader). The client asks the last leader it found
first, follows a redirect at once, and otherwise walks its list of meta addresses, backing off
after each failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pegasus_kv.client.retry import AttemptFailed, Deadline, may_retry, outcome_unknown, timed_out
from pegasus_kv.client.session import ClientSession, expect_reply, invariant
from pegasus_kv.core.errors import InvalidArgumentError, NotLeaderError
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.transport import parse_address

R = TypeVar("R", bound=Message)

MAX_META_ADDRESSES = 64


def parse_meta_addresses(meta: str | Sequence[str]) -> list[str]:
    """`"host:port"`, `"h1:p1,h2:p2"` (Pegasus's comma-separated form) or a list of addresses."""
    items = meta.split(",") if isinstance(meta, str) else list(meta)
    addresses: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidArgumentError(f"a meta address must be a str, got {type(item).__name__}")
        address = item.strip()
        parse_address(address)  # InvalidArgumentError names what is wrong
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise InvalidArgumentError("the client needs at least one meta address")
    if len(addresses) > MAX_META_ADDRESSES:
        raise InvalidArgumentError(f"at most {MAX_META_ADDRESSES} meta addresses, got {len(addresses)}")
    return addresses


def leader_named_by(error: NotLeaderError) -> str | None:
    """The leader address a NotLeaderError names, or None when the meta did not know it."""
    try:
        parse_address(error.message)
    except InvalidArgumentError:
        return None
    return error.message


class MetaCaller:
    def __init__(self, session: ClientSession, addresses: Sequence[str]) -> None:
        invariant(len(addresses) > 0, "a meta caller needs addresses")
        self._session = session
        self.addresses = tuple(addresses)
        self._cursor = 0  # the next address of the list to try when no leader is known
        self._leader: str | None = None  # where the last meta request succeeded
        # A redirect is followed without backing off, but only this often per call: two metas
        # that name each other (an election in progress) must not make a call spin.
        self._max_redirects = 2 * len(self.addresses) + 2

    @property
    def leader(self) -> str | None:
        return self._leader

    async def call(
        self,
        request: Message,
        response_type: type[R],
        *,
        deadline: Deadline,
        idempotent: bool,
        what: str,
    ) -> R:
        failures = 0
        redirects = 0
        while True:
            address = self._leader or self.addresses[self._cursor]
            try:
                reply = await self._session.attempt(address, request, gpid=None, deadline=deadline)
            except AttemptFailed as failed:
                error = failed.error
                if isinstance(error, NotLeaderError):
                    leader = leader_named_by(error)
                    if leader is not None and leader != address and redirects < self._max_redirects:
                        redirects += 1
                        self._leader = leader
                        continue
                elif not may_retry(failed, idempotent=idempotent):
                    if failed.maybe_applied:
                        raise outcome_unknown(what, failed) from error
                    raise error from error.__cause__
                self._move_on_from(address)
                failures += 1
                if deadline.expired:
                    raise timed_out(what, deadline, error, write=not idempotent) from error
                await self._session.pacer.pause(failures, deadline)
                if deadline.expired:
                    raise timed_out(what, deadline, error, write=not idempotent) from error
                continue
            self._leader = address
            return expect_reply(reply, response_type, what)

    def _move_on_from(self, address: str) -> None:
        if self._leader == address:
            self._leader = None
        if self.addresses[self._cursor] == address:
            self._cursor = (self._cursor + 1) % len(self.addresses)
