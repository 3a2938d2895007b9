"""Identifiers of the replication domain: gpid, ballot, decree."""

from __future__ import annotations

from typing import NewType

import msgspec

# A configuration's version. Only meta moves it forward; every message carries the ballot it
# was sent under and a replica rejects anything from an older one (PacificA section 3).
Ballot = NewType("Ballot", int)

# The serial number of a mutation inside one partition, assigned by the primary, starting at 1.
# Decree 0 means "nothing yet".
Decree = NewType("Decree", int)

INVALID_BALLOT = Ballot(0)
INVALID_DECREE = Decree(0)


class Gpid(msgspec.Struct, frozen=True, array_like=True, order=True):
    """Global partition id: the table (app) id and the partition index inside it."""

    app_id: int
    partition_index: int

    def __str__(self) -> str:
        return f"{self.app_id}.{self.partition_index}"

    @classmethod
    def parse(cls, text: str) -> Gpid:
        """Parse the `app_id.partition_index` form printed by `str()` and the shell."""
        app, sep, index = text.partition(".")
        if not sep or not app.isdigit() or not index.isdigit():
            raise ValueError(f"not a gpid (expected APP_ID.PARTITION_INDEX): {text!r}")
        return cls(int(app), int(index))
