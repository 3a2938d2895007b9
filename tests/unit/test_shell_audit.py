"""The audit log: JSON lines on disk by the time flush returns, private, rotated, and bounded."""

from __future__ import annotations

import asyncio
import datetime
import json
import stat
from pathlib import Path

from pegasus_kv.shell.audit import MAX_FIELD_CHARS, AuditEvent, AuditLog


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_record_is_one_json_line_with_a_utc_time_readable_only_by_the_owner(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.log"

    async def story() -> None:
        audit = AuditLog(path)
        audit.start()
        audit.record(
            AuditEvent.COMMAND,
            user="admin",
            fingerprint="SHA256:abc",
            peer="127.0.0.1:5000",
            command='set hk sk "v"\nx',
            outcome="ok",
            exit_status=0,
            duration_ms=3,
        )
        audit.record(AuditEvent.AUTH_REFUSED, user="mallory", fingerprint="", outcome="denied: no key")
        await audit.flush()
        assert len(lines_of(path)) == 2  # on disk once flush returned, before close
        await audit.close()

    asyncio.run(story())
    first, second = lines_of(path)
    assert first["event"] == "command" and first["command"] == 'set hk sk "v"\nx'
    assert list(first)[:3] == ["time", "event", "user"]
    assert datetime.datetime.fromisoformat(str(first["time"])).utcoffset() == datetime.timedelta(0)
    assert second == {**second, "event": "auth_refused", "user": "mallory", "outcome": "denied: no key"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_log_rotates_at_its_size_limit_keeping_a_bounded_number_of_old_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"

    async def story() -> None:
        audit = AuditLog(path, max_bytes=1024, backups=2)
        audit.start()
        for index in range(60):
            audit.record(AuditEvent.COMMAND, command=f"get hk{index} sk", exit_status=0)
            await audit.flush()  # one write per record, so every rotation point is reached
        await audit.close()

    asyncio.run(story())
    files = sorted(file.name for file in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    assert all((tmp_path / name).stat().st_size <= 1024 for name in files)
    kept = [line["command"] for name in files[::-1] for line in lines_of(tmp_path / name)]  # oldest first
    first = int(str(kept[0]).split()[1][2:])
    assert first > 0  # the oldest records went with the files past the limit
    assert kept == [f"get hk{index} sk" for index in range(first, 60)]  # the rest, in order, no gap


def test_a_full_queue_drops_records_and_says_how_many(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"

    async def story() -> int:
        audit = AuditLog(path, max_pending=3)
        audit.start()
        for index in range(5):  # the writer has not run yet: 3 queue, 2 are dropped
            audit.record(AuditEvent.COMMAND, command=f"c{index}")
        await audit.close()
        return audit.dropped

    assert asyncio.run(story()) == 2
    lines = lines_of(path)
    assert [line.get("command") for line in lines[:3]] == ["c0", "c1", "c2"]
    assert lines[3]["event"] == "audit_dropped" and lines[3]["count"] == 2


def test_a_huge_command_line_is_cut_in_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"

    async def story() -> None:
        audit = AuditLog(path)
        audit.start()
        audit.record(AuditEvent.COMMAND, command="x" * (MAX_FIELD_CHARS + 10))
        await audit.close()

    asyncio.run(story())
    (line,) = lines_of(path)
    assert str(line["command"]).endswith("...[10 more characters]")
