"""`pegasus-kv meta --config FILE` as an operator runs it: a process that serves, stops cleanly on
SIGTERM or SIGINT, and finds its tables again when started on the same data directory."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pegasus_kv.core.errors import PegasusError
from pegasus_kv.replication.meta.admin_messages import ClusterInfoRequest, ClusterInfoResponse
from pegasus_kv.replication.pacifica.meta_requests import (
    CreateTableRequest,
    CreateTableResponse,
    ListTablesRequest,
    ListTablesResponse,
)
from pegasus_kv.testing.zookeeper import free_port
from tests.unit.meta_server_support import MetaCaller

pytestmark = pytest.mark.integration

WAIT_S = 20.0


def start_meta(config: Path, environ: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pegasus_kv.cli", "meta", "--config", str(config)],
        env={**os.environ, **environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def connect(address: str, process: subprocess.Popen[bytes]) -> MetaCaller:
    async with asyncio.timeout(WAIT_S):
        while True:
            assert process.poll() is None, process.communicate()[0].decode(errors="replace")
            try:
                meta = await MetaCaller.to(address)
                await meta.call(ClusterInfoRequest(), ClusterInfoResponse)
                return meta
            except PegasusError:  # not listening yet, or not leading yet
                await asyncio.sleep(0.05)


def stop(process: subprocess.Popen[bytes], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    output, _ = process.communicate(timeout=WAIT_S)
    return process.returncode, output.decode(errors="replace")


def test_a_meta_process_serves_stops_on_a_signal_and_keeps_its_tables(tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    config = tmp_path / "meta.toml"
    config.write_text(f'port = {port}\ntick_ms = 100\n[store]\nkind = "local"\ndata_dir = "data"\n')
    environ = {"PEGASUS_KV_META__CLUSTER_NAME": "from-env"}

    async def first_run(process: subprocess.Popen[bytes]) -> None:
        meta = await connect(address, process)
        info = await meta.call(ClusterInfoRequest(), ClusterInfoResponse)
        assert (info.cluster_name, info.leader) == ("from-env", address)
        await meta.call(CreateTableRequest(name="temp", partition_count=4), CreateTableResponse)
        await meta.close()

    async def second_run(process: subprocess.Popen[bytes]) -> list[str]:
        meta = await connect(address, process)
        reply = await meta.call(ListTablesRequest(), ListTablesResponse)
        await meta.close()
        return [table.name for table in reply.tables]

    process = start_meta(config, environ)
    try:
        asyncio.run(first_run(process))
    finally:
        status, output = stop(process, signal.SIGTERM)
    assert status == 0, output
    assert "table 'temp' created" in output  # one INFO line per durable change
    assert (tmp_path / "data" / "LOCK").exists()

    process = start_meta(config, environ)
    try:
        assert asyncio.run(second_run(process)) == ["temp"]
    finally:
        status, output = stop(process, signal.SIGINT)
    assert status == 0, output
