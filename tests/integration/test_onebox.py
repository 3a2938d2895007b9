"""`pegasus-kv onebox` as a developer uses it: start a local cluster, use table `temp` through the
client, crash a replica server and keep writing, bring it back, and stop everything."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pegasus_kv import Client
from pegasus_kv.core.errors import PegasusError
from tests.integration.onebox_support import (
    FAILOVER_BUDGET_S,
    START_TIMEOUT_S,
    is_alive,
    onebox,
    recorded_pids,
    running_onebox,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def onebox_dir(tmp_path: Path) -> Iterator[Path]:
    with running_onebox(tmp_path / "onebox") as data_dir:
        yield data_dir


async def write_until_it_succeeds(meta: list[str], hash_key: bytes, budget_s: float) -> float:
    """Set one key over and over until a write succeeds; return how long that took."""
    started = time.monotonic()
    async with Client(meta, timeout=2.0) as client:
        table = await client.open_table("temp")
        while True:
            try:
                await table.set(hash_key, b"sk", b"after the crash")
                assert await table.get(hash_key, b"sk") == b"after the crash"
                return time.monotonic() - started
            except PegasusError:
                if time.monotonic() - started > budget_s:
                    raise
                await asyncio.sleep(0.2)


def test_onebox_serves_temp_survives_a_crashed_replica_server_and_stops(onebox_dir: Path) -> None:
    status = onebox("status", "--data-dir", str(onebox_dir), "--json")
    assert status.returncode == 0, status.stderr
    cluster = json.loads(status.stdout)
    assert set(cluster) == {"meta", "replica", "ssh", "ssh_command", "ssh_key", "pids", "metrics"}
    assert len(cluster["meta"]) == 1 and len(cluster["replica"]) == 3
    assert set(cluster["pids"]) == {"meta1", "replica1", "replica2", "replica3"}
    assert all(is_alive(pid) for pid in cluster["pids"].values())
    meta: list[str] = cluster["meta"]

    async def use_temp() -> None:
        async with Client(meta, timeout=10.0) as client:
            table = await client.open_table("temp")
            for index in range(20):  # 20 hash keys spread over the 8 partitions
                await table.set(f"user{index}".encode(), b"name", f"n{index}".encode())
            await table.multi_set(b"profile", {b"a": b"1", b"b": b"2", b"c": b"3"})
            assert await table.get(b"user7", b"name") == b"n7"
            assert await table.get(b"user7", b"missing") is None
            result = await table.multi_get(b"profile")
            assert dict(result.items) == {b"a": b"1", b"b": b"2", b"c": b"3"}

    asyncio.run(use_temp())

    killed = onebox("stop-node", "replica1", "--kill", "--data-dir", str(onebox_dir))
    assert killed.returncode == 0, killed.stderr
    assert not is_alive(cluster["pids"]["replica1"])
    after = json.loads(onebox("status", "--data-dir", str(onebox_dir), "--json").stdout)
    assert after["pids"]["replica1"] is None

    # Every partition that replica1 was primary of fails over once meta's grace period ends.
    for index in range(8):
        asyncio.run(write_until_it_succeeds(meta, f"after{index}".encode(), FAILOVER_BUDGET_S))

    restarted = onebox("start-node", "replica1", "--data-dir", str(onebox_dir))
    assert restarted.returncode == 0, restarted.stderr
    back = json.loads(onebox("status", "--data-dir", str(onebox_dir), "--json").stdout)
    assert back["pids"]["replica1"] is not None and is_alive(back["pids"]["replica1"])

    async def read_back() -> None:
        async with Client(meta, timeout=10.0) as client:
            table = await client.open_table("temp")
            assert await table.get(b"user3", b"name") == b"n3"
            assert await table.get(b"after5", b"sk") == b"after the crash"

    asyncio.run(read_back())

    # `start` on a running onebox starts nothing new and waits until every partition has its
    # three members again: replica1 learned what it missed.
    healthy = onebox("start", "--data-dir", str(onebox_dir), timeout_s=START_TIMEOUT_S + 10)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "8/8 partitions healthy" in healthy.stderr

    pids = recorded_pids(onebox_dir)
    stopped = onebox("stop", "--data-dir", str(onebox_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert [pid for pid in pids if is_alive(pid)] == []
    final = json.loads(onebox("status", "--data-dir", str(onebox_dir), "--json").stdout)
    assert set(final["pids"].values()) == {None}


def test_a_zookeeper_onebox_keeps_serving_when_the_meta_leader_is_killed(tmp_path: Path) -> None:
    options = ("--meta-servers", "3", "--meta-store", "zookeeper")
    with running_onebox(tmp_path / "onebox", *options) as data_dir:
        cluster = json.loads(onebox("status", "--data-dir", str(data_dir), "--json").stdout)
        assert len(cluster["meta"]) == 3
        assert cluster["pids"]["zookeeper"] is not None

        async def leader() -> str:
            async with Client(cluster["meta"], timeout=10.0) as client:
                assert [table.name for table in await client.list_tables()] == ["temp"]
                assert client.meta_leader is not None
                return client.meta_leader

        leader_name = f"meta{cluster['meta'].index(asyncio.run(leader())) + 1}"
        killed = onebox("stop-node", leader_name, "--kill", "--data-dir", str(data_dir))
        assert killed.returncode == 0, killed.stderr

        async def another_meta_leads() -> None:
            # The dead leader's ZooKeeper session (4 s) must expire before another meta is elected.
            async with Client(cluster["meta"], timeout=30.0) as client:
                await client.create_table("after_failover", 4, 3)
                assert client.meta_leader != cluster["meta"][int(leader_name[-1]) - 1]
                table = await client.open_table("temp")
                await table.set(b"hk", b"sk", b"written after the meta failover")
                assert await table.get(b"hk", b"sk") == b"written after the meta failover"

        asyncio.run(another_meta_leads())
        pids = recorded_pids(data_dir)
        assert onebox("clean", "--data-dir", str(data_dir)).returncode == 0
        assert [pid for pid in pids if is_alive(pid)] == []
        assert not data_dir.exists()


def test_onebox_clean_refuses_a_directory_onebox_did_not_create(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    refused = onebox("clean", "--data-dir", str(precious))
    assert refused.returncode == 1
    assert "not a onebox directory" in refused.stderr
    assert (precious / "notes.txt").read_text() == "keep me"


def readme_client_example() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("```python\n") + len("```python\n")
    return readme[start : readme.index("```", start)]


def test_the_readme_client_example_runs_as_written(tmp_path: Path) -> None:
    example = readme_client_example()
    assert '"127.0.0.1:34601"' in example  # onebox's default meta address, as a newcomer runs it
    with running_onebox(tmp_path / "onebox") as data_dir:
        status = json.loads(onebox("status", "--data-dir", str(data_dir), "--json").stdout)
        script = tmp_path / "example.py"
        # The test cluster listens on free ports; only the address differs from the README.
        script.write_text(example.replace("127.0.0.1:34601", status["meta"][0]))
        ran = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
        )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[:2] == ["b'Ada'", "1"]
    assert lines[2] == "{b'city': b'London', b'lang': b'en', b'name': b'Ada', b'visits': b'1'} True"
    assert lines[3:] == [
        "b'user1' b'city' b'London'",
        "b'user1' b'lang' b'en'",
        "b'user1' b'name' b'Ada'",
        "b'user1' b'visits' b'1'",
    ]
