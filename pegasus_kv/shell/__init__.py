"""The admin shell: Pegasus-style commands over the client API, served over SSH by the meta leader.

The command layer (this package's shell.py, parsing.py, output.py, commands/) knows nothing of SSH;
the SSH server drives `Shell.execute` once per command line.
"""

from __future__ import annotations

from pegasus_kv.shell.output import CollectingOutput, Output
from pegasus_kv.shell.roles import Role
from pegasus_kv.shell.shell import Outcome, Shell

__all__ = ["CollectingOutput", "Outcome", "Output", "Role", "Shell"]
