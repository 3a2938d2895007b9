"""The `pegasus-kv` command: help on every subcommand, hash routing, and the demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pegasus_kv.cli import main
from pegasus_kv.core.hashing import crc64_nvme


def test_hash_prints_the_partition_a_key_routes_to(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash", "user42", "profile", "-p", "16", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["hash"] == crc64_nvme(b"user42")
    assert shown["partition_index"] == crc64_nvme(b"user42") % 16


def test_hash_refuses_a_partition_count_that_is_not_a_power_of_two(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["hash", "k", "-p", "12"]) == 1
    assert "power of two" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["version", "hash", "demo"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: pegasus-kv" in capsys.readouterr().out


def test_demo_applies_reads_and_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--data-dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "IncrResponse(new_value=5)" in out
    assert "(b'lang', b'fr')" in out  # the check_and_set passed and replaced the value
    assert "reopened checkpoint: last applied decree 3" in out
    # A second run into the same directory refuses instead of mixing stores.
    assert main(["demo", "--data-dir", str(tmp_path / "demo")]) == 1
