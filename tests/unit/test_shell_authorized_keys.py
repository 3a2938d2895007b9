"""authorized_keys with a role per key: what grants access, what is skipped, and reloading on change."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncssh
import pytest

from pegasus_kv.shell.authorized_keys import (
    AuthorizedKeys,
    AuthorizedKeysError,
    parse_authorized_keys,
    parse_line,
)
from pegasus_kv.shell.roles import Role


def public_line(comment: str = "ops@laptop") -> tuple[asyncssh.SSHKey, str]:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    return key, key.export_public_key("openssh").decode().strip()


def test_each_key_brings_its_role_fingerprint_and_comment() -> None:
    admin_key, admin = public_line("alice@laptop")
    reader_key, reader = public_line("dashboards")
    text = f'# operators\n\nrole="admin" {admin}\nROLE="readonly"  {reader}\n'

    parsed = parse_authorized_keys(text)

    assert parsed.problems == []
    entry = parsed.keys[admin_key.public_data]
    assert entry.role is Role.ADMIN and entry.comment == "alice@laptop" and entry.line_number == 3
    assert entry.fingerprint == admin_key.get_fingerprint("sha256")
    assert entry.fingerprint.startswith("SHA256:")
    assert parsed.keys[reader_key.public_data].role is Role.READONLY


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ("", "no role"),
        ('role="root"', "is not role"),
        ("role=admin", "double quotes"),
        ('role="admin",role="readonly"', "appears twice"),
        ('from="10.0.0.0/8",role="admin"', "unsupported option(s) from"),
        ('no-pty,role="admin"', "unsupported option(s) no-pty"),
        ('role="admin', "unterminated"),
        ('role="admin",', "trailing"),
    ],
)
def test_a_line_without_exactly_one_valid_role_and_nothing_else_is_refused(options: str, reason: str) -> None:
    _, key = public_line()
    with pytest.raises(AuthorizedKeysError, match=re.escape(reason)):
        parse_line(f"{options} {key}".strip(), 1)


def test_bad_lines_are_reported_and_the_rest_of_the_file_still_counts() -> None:
    good_key, good = public_line()
    text = (
        'role="admin" ssh-ed25519 AAAAnotbase64!!\n'
        f'role="admin" {good}\n'
        f'role="readonly" {good}\n'  # the same key again: the first line wins
        "garbage\n"
    )
    parsed = parse_authorized_keys(text)

    assert list(parsed.keys) == [good_key.public_data]
    assert parsed.keys[good_key.public_data].role is Role.ADMIN
    assert [problem.split(":")[0] for problem in parsed.problems] == ["line 1", "line 3", "line 4"]


def test_the_file_is_read_again_when_it_changes_and_a_missing_file_authorizes_nobody(tmp_path: Path) -> None:
    path = tmp_path / "authorized_keys"
    first_key, first = public_line()
    second_key, second = public_line()

    async def story() -> None:
        keys = AuthorizedKeys(path)
        assert await keys.lookup(first_key) is None  # no file yet

        path.write_text(f'role="admin" {first}\n')
        entry = await keys.lookup(first_key)
        assert entry is not None and entry.role is Role.ADMIN
        assert await keys.lookup(second_key) is None

        path.write_text(f'role="readonly" {first}\nrole="admin" {second}\n')
        demoted = await keys.lookup(first_key)
        assert demoted is not None and demoted.role is Role.READONLY
        assert await keys.lookup(second_key) is not None

        path.unlink()
        assert await keys.lookup(first_key) is None
        assert await keys.count() == 0

    asyncio.run(story())
