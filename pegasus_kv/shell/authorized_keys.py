"""Who may log in to the admin shell, and as what: an OpenSSH authorized_keys file with a role per key.

    keys = AuthorizedKeys(Path("/etc/pegasus-kv/authorized_keys"))
    entry = await keys.lookup(public_key)      # None: not authorized
    entry.role, entry.fingerprint               # Role.ADMIN, "SHA256:..."

The file uses OpenSSH's format (sshd(8), AUTHORIZED_KEYS FILE FORMAT): one key a line, `#` comments,
an options field before the key type. The one option understood here is the role, and every key must
carry it:

    role="admin" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... alice@laptop
    role="readonly" ecdsa-sha2-nistp256 AAAAE2VjZHNh... dashboards

A line without a valid role, with any other option (a `from=` or `no-pty` the shell would not
enforce must not silently widen access), or with a key that does not parse is skipped and logged;
the rest of the file still counts. The role comes from the key alone: the SSH user name is recorded
in the audit log but grants nothing.

The file is read again whenever its modification time, size or inode changes, so keys are added or
revoked without a restart. A missing file authorizes nobody. Reading happens in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from pegasus_kv.shell.roles import Role

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 1024 * 1024
MAX_KEYS = 10_000
MAX_LINE_CHARS = 16 * 1024
ROLE_OPTION = "role"


class AuthorizedKeysError(ValueError):
    """One line of an authorized_keys file that cannot be used (the message says why)."""


@dataclass(frozen=True)
class AuthorizedKey:
    role: Role
    fingerprint: str  # "SHA256:<base64>", as `ssh-keygen -l` prints it
    comment: str
    line_number: int


@dataclass(frozen=True)
class ParsedKeys:
    """The usable keys of one version of the file (by the key's wire encoding) and the lines skipped."""

    keys: dict[bytes, AuthorizedKey]
    problems: list[str]


def _split_options(line: str) -> tuple[str, str]:
    """Split `options rest` at the first whitespace outside double quotes."""
    quoted = False
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char in " \t" and not quoted:
            return line[:index], line[index:].strip()
    if quoted:
        raise AuthorizedKeysError("unterminated quote in the options")
    return line, ""


def _parse_options(text: str) -> dict[str, str | None]:
    """`a="x, y",b` -> {"a": "x, y", "b": None}; a repeated option is refused."""
    options: dict[str, str | None] = {}
    index = 0
    while index < len(text):
        end = index
        while end < len(text) and text[end] not in ',="':
            end += 1
        name = text[index:end].lower()
        if not name:
            raise AuthorizedKeysError(f"empty option name at column {index + 1}")
        value: str | None = None
        if end < len(text) and text[end] == "=":
            if end + 1 >= len(text) or text[end + 1] != '"':
                raise AuthorizedKeysError(f'option {name}: the value must be in double quotes ({name}="...")')
            chars: list[str] = []
            cursor = end + 2
            while cursor < len(text) and text[cursor] != '"':
                if text[cursor] == "\\" and cursor + 1 < len(text) and text[cursor + 1] == '"':
                    cursor += 1
                chars.append(text[cursor])
                cursor += 1
            if cursor >= len(text):
                raise AuthorizedKeysError(f"option {name}: unterminated quote")
            value = "".join(chars)
            end = cursor + 1
        elif end < len(text) and text[end] == '"':
            raise AuthorizedKeysError(f"option {name}: stray quote")
        if name in options:
            raise AuthorizedKeysError(f"option {name} appears twice")
        options[name] = value
        if end < len(text):
            if text[end] != ",":
                raise AuthorizedKeysError(f"option {name}: expected ',' after it")
            end += 1
            if end >= len(text):
                raise AuthorizedKeysError("trailing ',' in the options")
        index = end
    return options


def _looks_like_key_type(token: str) -> bool:
    return token.startswith(("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"))


def parse_line(line: str, line_number: int) -> tuple[bytes, AuthorizedKey] | None:
    """One line -> (the key's wire encoding, its entry); None for blank and comment lines.

    Raises AuthorizedKeysError for a line that names a key but cannot be used."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if len(text) > MAX_LINE_CHARS:
        raise AuthorizedKeysError(f"longer than {MAX_LINE_CHARS} characters")
    first = text.split(None, 1)[0]
    if _looks_like_key_type(first):
        raise AuthorizedKeysError('no role: put role="admin" or role="readonly" before the key type')
    options_text, key_text = _split_options(text)
    options = _parse_options(options_text)
    unsupported = sorted(name for name in options if name != ROLE_OPTION)
    if unsupported:
        raise AuthorizedKeysError(
            f"unsupported option(s) {', '.join(unsupported)}; only role=... is understood"
        )
    role_text = options.get(ROLE_OPTION)
    try:
        role = Role(role_text)
    except ValueError:
        allowed = " or ".join(f'role="{role.value}"' for role in Role)
        raise AuthorizedKeysError(f"role {role_text!r} is not {allowed}") from None
    fields = key_text.split(None, 2)
    if len(fields) < 2 or not _looks_like_key_type(fields[0]):
        raise AuthorizedKeysError("expected a key type and a base64 key after the options")
    try:
        key = asyncssh.import_public_key(f"{fields[0]} {fields[1]}")
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise AuthorizedKeysError(f"the {fields[0]} key does not parse: {exc}") from None
    if key.algorithm.decode("ascii") != fields[0]:
        raise AuthorizedKeysError(f"the key is a {key.algorithm.decode('ascii')} key, not {fields[0]}")
    comment = fields[2] if len(fields) > 2 else ""
    entry = AuthorizedKey(
        role=role,
        fingerprint=key.get_fingerprint("sha256"),
        comment=comment,
        line_number=line_number,
    )
    return key.public_data, entry


def parse_authorized_keys(text: str) -> ParsedKeys:
    """Every usable key of a file's text (the first line wins for a key listed twice)."""
    keys: dict[bytes, AuthorizedKey] = {}
    problems: list[str] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        try:
            parsed = parse_line(line, line_number)
        except AuthorizedKeysError as exc:
            problems.append(f"line {line_number}: {exc}")
            continue
        if parsed is None:
            continue
        public_data, entry = parsed
        if public_data in keys:
            problems.append(
                f"line {line_number}: the key of line {keys[public_data].line_number} again; ignored"
            )
            continue
        if len(keys) >= MAX_KEYS:
            problems.append(f"line {line_number}: more than {MAX_KEYS} keys; the rest are ignored")
            break
        keys[public_data] = entry
    return ParsedKeys(keys=keys, problems=problems)


_Signature = tuple[int, int, int, int]  # (inode, device, size, mtime_ns)


def _read_if_changed(path: Path, seen: _Signature | None) -> tuple[_Signature | None, str | None]:
    """(signature, text) of the file; text is None when the signature equals `seen` (unchanged)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None, ""
    signature = (stat.st_ino, stat.st_dev, stat.st_size, stat.st_mtime_ns)
    if signature == seen:
        return signature, None
    with open(path, "rb") as handle:
        raw = handle.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise AuthorizedKeysError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return signature, raw.decode("utf-8", errors="replace")


class AuthorizedKeys:
    """The keys of one authorized_keys file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: _Signature | None = None
        self._keys: dict[bytes, AuthorizedKey] = {}
        self._loaded = False
        self._lock = asyncio.Lock()

    async def lookup(self, key: asyncssh.SSHKey) -> AuthorizedKey | None:
        """The entry of `key` in the current version of the file (None: not authorized)."""
        async with self._lock:  # one reload at a time; the others wait for its result
            await self._refresh()
            return self._keys.get(key.public_data)

    async def count(self) -> int:
        async with self._lock:
            await self._refresh()
            return len(self._keys)

    async def _refresh(self) -> None:
        try:
            signature, text = await asyncio.to_thread(_read_if_changed, self.path, self._signature)
        except (OSError, AuthorizedKeysError) as exc:
            # Unreadable right now (permissions, a rewrite in progress): keep the last good version.
            logger.error("authorized keys %s cannot be read (%s); keeping the previous keys", self.path, exc)
            return
        if self._loaded and signature == self._signature:
            return
        self._signature = signature
        self._loaded = True
        if signature is None:
            if self._keys:
                logger.warning("authorized keys %s is gone: nobody may log in to the admin shell", self.path)
            else:
                logger.warning("authorized keys %s does not exist: nobody may log in", self.path)
            self._keys = {}
            return
        parsed = parse_authorized_keys(text or "")
        for problem in parsed.problems:
            logger.warning("authorized keys %s %s", self.path, problem)
        self._keys = parsed.keys
        roles = [entry.role.value for entry in parsed.keys.values()]
        logger.info(
            "authorized keys %s loaded: %d admin, %d readonly",
            self.path,
            roles.count(Role.ADMIN.value),
            roles.count(Role.READONLY.value),
        )
