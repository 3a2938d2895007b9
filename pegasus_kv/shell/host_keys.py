"""Key files of the admin shell: the server's host key, and the user key pair onebox makes.

    host_key = load_or_create_host_key(Path("meta-data/ssh_host_ed25519_key"))
    public_line = create_user_key(Path("onebox/ssh/id_ed25519"), comment="onebox admin")

Private keys are written in OpenSSH's format with mode 0600 (OpenSSH refuses an identity file that
others can read), created under a temporary name and linked into place, so two meta servers that
share a host key path never see half a key, and the first one to create it wins. A host key should be
shared by every meta server of a cluster: after a failover, clients then meet the same host key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import asyncssh

KEY_ALGORITHM = "ssh-ed25519"
PRIVATE_KEY_MODE = 0o600
MAX_KEY_FILE_BYTES = 64 * 1024


class KeyFileError(RuntimeError):
    """A key file cannot be read, parsed or written (the message names it)."""


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Create `path` holding `data` unless it exists; True when this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process created the key first
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _read_private_key(path: Path) -> asyncssh.SSHKey:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read the key {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"the key {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        return asyncssh.import_private_key(data)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise KeyFileError(f"the key {path} does not parse (a passphrase is not supported): {exc}") from exc


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The private host key at `path`, generated (ed25519, mode 0600) when the file does not exist."""
    if not path.exists():
        key = asyncssh.generate_private_key(KEY_ALGORITHM, comment="pegasus-kv admin shell host key")
        try:
            _write_new(path, key.export_private_key("openssh"), PRIVATE_KEY_MODE)
        except OSError as exc:
            raise KeyFileError(f"cannot write the host key {path}: {exc.strerror or exc}") from exc
    return _read_private_key(path)


def create_user_key(path: Path, *, comment: str) -> str:
    """Write a new ed25519 key pair: `path` (private, 0600) and `path`.pub; returns the public line.

    An existing pair is kept (its public line is returned), so a restarted onebox keeps its key."""
    if not path.exists():
        key = asyncssh.generate_private_key(KEY_ALGORITHM, comment=comment)
        try:
            _write_new(path, key.export_private_key("openssh"), PRIVATE_KEY_MODE)
        except OSError as exc:
            raise KeyFileError(f"cannot write the key {path}: {exc.strerror or exc}") from exc
    key = _read_private_key(path)
    public_line = key.export_public_key("openssh").decode("ascii").strip()
    public_path = path.with_name(path.name + ".pub")
    try:
        public_path.write_text(public_line + "\n")
    except OSError as exc:
        raise KeyFileError(f"cannot write {public_path}: {exc.strerror or exc}") from exc
    return public_line


def fingerprint(public_line: str) -> str:
    """ "SHA256:..." of an OpenSSH public key line (`ssh-ed25519 AAAA... comment`)."""
    return asyncssh.import_public_key(public_line).get_fingerprint("sha256")
