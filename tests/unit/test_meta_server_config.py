"""The meta server's TOML configuration: defaults, environment overrides, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.replication.meta.config import LocalStoreConfig, ZooKeeperStoreConfig, load_meta_config
from pegasus_kv.replication.meta.main import run_meta


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meta.toml"
    path.write_text(text)
    return path


LOCAL = '[store]\nkind = "local"\ndata_dir = "meta-data"\n'


def test_a_minimal_file_gets_pegasus_defaults_and_a_data_dir_next_to_it(tmp_path: Path) -> None:
    config = load_meta_config(write(tmp_path, LOCAL), environ={})

    assert config.store == LocalStoreConfig(data_dir=tmp_path.resolve() / "meta-data")
    assert (config.port, config.tick_ms, config.snapshot_every_records) == (34601, 1000, 1000)
    options = config.meta_options()
    # Pegasus with one-second ticks: beacons every 3 s, lease 20 s, declared dead after 22 s.
    assert (options.beacon_interval_ticks, options.lease_ticks, options.grace_ticks) == (3, 20, 22)
    assert options.drop_hold_ticks == 7 * 24 * 3600


def test_periods_in_seconds_become_ticks_rounded_up(tmp_path: Path) -> None:
    text = "tick_ms = 100\nbeacon_interval_s = 0.3\nlease_s = 1.05\ngrace_s = 1.5\n" + LOCAL
    options = load_meta_config(write(tmp_path, text), environ={}).meta_options()

    assert (options.beacon_interval_ticks, options.lease_ticks, options.grace_ticks) == (3, 11, 15)


def test_environment_variables_override_the_file(tmp_path: Path) -> None:
    environ = {
        "PEGASUS_KV_META__PORT": "34602",
        "PEGASUS_KV_META__STORE__DATA_DIR": "/srv/meta",
        "PEGASUS_KV_META__META_SERVERS": "m1:34601, m2:34601",
        "PEGASUS_KV_UNRELATED": "ignored",
    }
    config = load_meta_config(write(tmp_path, "port = 1\n" + LOCAL), environ=environ)

    assert config.port == 34602
    assert config.store == LocalStoreConfig(data_dir=Path("/srv/meta"))
    assert config.meta_servers == ["m1:34601", "m2:34601"]


def test_a_zookeeper_store_is_configured_by_hosts(tmp_path: Path) -> None:
    text = 'cluster_name = "c1"\n[store]\nkind = "zookeeper"\nhosts = "zk1:2181,zk2:2181"\n'
    config = load_meta_config(write(tmp_path, text), environ={})

    assert config.store == ZooKeeperStoreConfig(kind="zookeeper", hosts="zk1:2181,zk2:2181")
    assert config.store.root == "/pegasus-kv"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("lease_s = 22.0\ngrace_s = 22.0\n" + LOCAL, "lease_s"),  # grace must exceed lease
        ("tick_ms = 5000\nbeacon_interval_s = 1\nlease_s = 2\ngrace_s = 3\n" + LOCAL, "tick_ms = 5000"),
        ("prot = 34601\n" + LOCAL, "prot"),  # a typo is not silently ignored
        ('cluster_name = "a/b"\n' + LOCAL, "cluster_name"),
        ('meta_servers = ["no-port"]\n' + LOCAL, "meta_servers"),
        ('[store]\nkind = "floppy"\n', "store"),
        ("port = [\n", "not valid TOML"),
    ],
)
def test_an_invalid_configuration_is_refused_with_the_offending_key(
    tmp_path: Path, text: str, complaint: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=complaint):
        load_meta_config(write(tmp_path, text), environ={})


def test_an_unknown_environment_override_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="grace"):
        load_meta_config(write(tmp_path, LOCAL), environ={"PEGASUS_KV_META__GRACE": "30"})


def test_run_meta_exits_with_status_2_on_an_invalid_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_meta(tmp_path / "missing.toml") == 2
    assert "cannot read configuration file" in capsys.readouterr().err
