"""Roles of admin shell keys.

Each key in the authorized_keys file carries one role. A readonly key may run only the commands that
change nothing in the cluster (the command layer refuses the others before anything is sent).
"""

from __future__ import annotations

import enum


class Role(enum.Enum):
    ADMIN = "admin"
    READONLY = "readonly"
