"""The meta server's [ssh] table: off by default, paths next to the config file or in the data dir,
and a configuration that would serve a shell nobody can be audited on is refused at startup."""

from __future__ import annotations

from pathlib import Path

import pytest

from pegasus_kv.core.errors import InvalidArgumentError
from pegasus_kv.replication.meta.config import MetaServerConfig, load_meta_config

LOCAL = '[store]\nkind = "local"\ndata_dir = "meta-data"\n'
ZOOKEEPER = '[store]\nkind = "zookeeper"\nhosts = "zk:2181"\n'


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> MetaServerConfig:
    path = tmp_path / "meta.toml"
    path.write_text(text)
    return load_meta_config(path, environ=environ or {})


def test_the_admin_shell_is_off_unless_a_port_is_given(tmp_path: Path) -> None:
    config = load(tmp_path, LOCAL)
    assert not config.ssh.enabled


def test_paths_resolve_next_to_the_config_file_and_default_into_the_data_dir(tmp_path: Path) -> None:
    config = load(tmp_path, LOCAL + '[ssh]\nport = 34701\nauthorized_keys = "keys/authorized_keys"\n')

    assert config.ssh.enabled and config.ssh.port == 34701
    assert config.ssh.authorized_keys == tmp_path.resolve() / "keys" / "authorized_keys"
    assert config.ssh_host_key_path() == tmp_path.resolve() / "meta-data" / "ssh_host_ed25519_key"
    assert config.ssh_audit_log_path() == tmp_path.resolve() / "meta-data" / "audit.log"


def test_environment_variables_reach_the_ssh_table(tmp_path: Path) -> None:
    environ = {"PEGASUS_KV_META__SSH__PORT": "2222", "PEGASUS_KV_META__SSH__AUTHORIZED_KEYS": "/etc/keys"}
    config = load(tmp_path, LOCAL, environ)
    assert config.ssh.port == 2222 and config.ssh.authorized_keys == Path("/etc/keys")


def test_a_port_without_authorized_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="authorized_keys is required"):
        load(tmp_path, LOCAL + "[ssh]\nport = 34701\n")


def test_with_zookeeper_the_host_key_and_audit_log_must_be_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"host_key and ssh\.audit_log must be set"):
        load(tmp_path, ZOOKEEPER + '[ssh]\nport = 34701\nauthorized_keys = "k"\n')
    config = load(
        tmp_path,
        ZOOKEEPER
        + '[ssh]\nport = 34701\nauthorized_keys = "k"\nhost_key = "/etc/hk"\naudit_log = "audit.log"\n',
    )
    assert config.ssh_host_key_path() == Path("/etc/hk")
    assert config.ssh_audit_log_path() == tmp_path.resolve() / "audit.log"
