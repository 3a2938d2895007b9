"""The admin shell of a onebox: a key pair for the local user, authorized as admin, and an SSH port per meta.

    files = prepare_admin_shell(Path("onebox"))     # DIR/ssh/: id_ed25519(.pub), authorized_keys, host key
    section = ssh_config_section(files, port=34701, audit_log=Path("onebox/meta1/audit.log"))
    wait_admin_shell("127.0.0.1:34701", timeout_s=10.0)
    print(ssh_command(files.identity, "127.0.0.1:34701"))

Like `ssh-keygen` for a new machine: the pair is made once and kept across restarts of the onebox.
Every meta shares one host key, so the ssh command that worked keeps working after a failover to
another meta (only the port changes). The command skips host-key checking because a onebox is
local and throwaway; a production cluster's operators pin its host key instead.
"""

from __future__ import annotations

import getpass
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from pegasus_kv.shell.host_keys import create_user_key, load_or_create_host_key

SSH_DIR = "ssh"
IDENTITY_FILE = "id_ed25519"
AUTHORIZED_KEYS_FILE = "authorized_keys"
HOST_KEY_FILE = "ssh_host_ed25519_key"
SSH_USER = "admin"
BANNER_PREFIX = b"SSH-2.0-"
POLL_S = 0.1


class AdminShellNotReadyError(RuntimeError):
    """The leader's admin shell did not answer in time."""


@dataclass(frozen=True)
class AdminShellFiles:
    identity: Path  # the private key the local user logs in with (0600)
    authorized_keys: Path
    host_key: Path


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prepare_admin_shell(data_dir: Path) -> AdminShellFiles:
    """Make (or keep) the key pair, authorize it as admin, and make the shared host key."""
    ssh_dir = data_dir / SSH_DIR
    ssh_dir.mkdir(parents=True, exist_ok=True)
    ssh_dir.chmod(0o700)
    identity = ssh_dir / IDENTITY_FILE
    public_line = create_user_key(identity, comment=f"{getpass.getuser()}@onebox")
    authorized_keys = ssh_dir / AUTHORIZED_KEYS_FILE
    if not authorized_keys.exists():
        authorized_keys.write_text(
            '# pegasus-kv admin shell keys: role="admin" or role="readonly" before each key.\n'
            "# The meta leader re-reads this file when it changes.\n"
            f'role="admin" {public_line}\n'
        )
    host_key = ssh_dir / HOST_KEY_FILE
    load_or_create_host_key(host_key)
    return AdminShellFiles(identity=identity, authorized_keys=authorized_keys, host_key=host_key)


def ssh_config_section(files: AdminShellFiles, *, port: int, audit_log: Path) -> str:
    """The [ssh] table of a meta server's config.toml."""
    return (
        "\n[ssh]\n"
        f"port = {port}\n"
        f"authorized_keys = {_toml_string(str(files.authorized_keys))}\n"
        f"host_key = {_toml_string(str(files.host_key))}\n"
        f"audit_log = {_toml_string(str(audit_log))}\n"
    )


def ssh_command(identity: Path, address: str) -> str:
    """The command line that opens the admin shell at "host:port" with the onebox's key."""
    host, _, port = address.rpartition(":")
    return shlex.join(
        [
            "ssh",
            "-i",
            str(identity),
            "-p",
            port,
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"{SSH_USER}@{host}",
        ]
    )


def answers_ssh(address: str, timeout_s: float = 1.0) -> bool:
    """True when an SSH server answers at "host:port" (it sends its version line first)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            received = b""
            while len(received) < len(BANNER_PREFIX):
                chunk = sock.recv(len(BANNER_PREFIX) - len(received))
                if not chunk:
                    return False
                received += chunk
            return received == BANNER_PREFIX
    except OSError:
        return False


def wait_admin_shell(address: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not answers_ssh(address):
        if time.monotonic() >= deadline:
            raise AdminShellNotReadyError(
                f"the admin shell did not answer on {address} within {timeout_s:.0f} s"
            )
        time.sleep(POLL_S)
