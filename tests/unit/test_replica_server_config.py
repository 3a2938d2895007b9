"""The replica server's configuration: a TOML file an operator writes, environment overrides, and
the mistakes it refuses before the server starts."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pegasus_kv.cli import main as cli_main
from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.replication.replica.config import load_replica_config
from pegasus_kv.replication.replica.log_store import FsyncPolicy

MINIMAL = """
meta_servers = ["meta1.example:34601", "meta2.example:34601"]
data_dir = "data"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "replica.toml"
    path.write_text(text)
    return path


def test_a_minimal_file_gets_pegasus_defaults_in_ticks(tmp_path: Path) -> None:
    config = load_replica_config(write(tmp_path, MINIMAL), environ={})
    assert config.data_dir == tmp_path / "data"  # relative to the file
    assert config.meta_servers == ["meta1.example:34601", "meta2.example:34601"]
    options = config.node_options()
    # 100 ms ticks: beacons every 3 s, a 20 s lease, config sync every 30 s, prepare timeout 1 s.
    assert (options.beacon_period_ticks, options.lease_ticks, options.config_sync_period_ticks) == (
        30,
        200,
        300,
    )
    assert options.replica.prepare_timeout_ticks == 10
    assert options.replica.prepare_list_capacity == 110
    assert config.log_options().fsync_policy is FsyncPolicy.GROUP


def test_environment_variables_override_the_file(tmp_path: Path) -> None:
    environ = {
        "PEGASUS_KV_REPLICA__PORT": "34802",
        "PEGASUS_KV_REPLICA__LOG__FSYNC_POLICY": "none",
        "PEGASUS_KV_REPLICA__META_SERVERS": "a.example:1,b.example:2",
        "UNRELATED": "x",
    }
    config = load_replica_config(write(tmp_path, MINIMAL), environ=environ)
    assert config.port == 34802
    assert config.log_options().fsync_policy is FsyncPolicy.NONE
    assert config.meta_servers == ["a.example:1", "b.example:2"]


def test_the_lease_never_rounds_up_past_what_meta_granted(tmp_path: Path) -> None:
    config = load_replica_config(
        write(tmp_path, MINIMAL + "tick_ms = 300\nlease_s = 1.0\nbeacon_interval_s = 0.3\n"), environ={}
    )
    assert config.node_options().lease_ticks == 3  # 0.9 s, not 1.2 s


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ("lease_s = 1.0\nbeacon_interval_s = 2.0\n", "beacon_interval_s"),
        ("tick_ms = 1000\nlease_s = 1.5\nbeacon_interval_s = 1.0\n", "tick_ms"),
        ('fsync = "always"\n', "fsync"),
        ("max_inflight_mutations = 200\n", "max_inflight_mutations"),
        ('advertised_address = "no port"\n', "advertised_address"),
    ],
)
def test_mistakes_are_refused_with_the_key_named(tmp_path: Path, extra: str, complaint: str) -> None:
    with pytest.raises(InvalidArgumentError, match=complaint):
        load_replica_config(write(tmp_path, MINIMAL + extra), environ={})


def test_the_command_exits_2_on_an_invalid_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "data_dir = 'x'\n")  # no meta_servers
    assert cli_main(["replica", "--config", str(path)]) == 2
    assert "meta_servers" in capsys.readouterr().err


def test_the_command_serves_until_sigterm_and_exits_0(tmp_path: Path) -> None:
    # No meta server answers: the replica server still starts, listens and keeps trying.
    path = write(
        tmp_path,
        'meta_servers = ["127.0.0.1:9"]\ndata_dir = "data"\nport = 0\nlog_level = "INFO"\n',
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "pegasus_kv.cli", "replica", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 20
        seen = ""
        while "replica server listening" not in seen and time.monotonic() < deadline:
            seen += process.stdout.readline()
        assert "replica server listening" in seen
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 0, seen + output
        assert (tmp_path / "data").is_dir()  # the data directory was created on start
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
