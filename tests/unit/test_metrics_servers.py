"""Real servers in one process serve their own metrics on the configured port: a meta server and
three replica servers, a table written and read through the client, every /metrics scraped, and
every metrics port closed again once its server stops."""

from __future__ import annotations

import asyncio
import urllib.error
from pathlib import Path

import pytest

from pegasus_kv import Client
from pegasus_kv.replication.meta.config import MetaServerConfig
from pegasus_kv.replication.meta.server import MetaServer
from pegasus_kv.replication.replica.server import ReplicaServer
from pegasus_kv.testing.zookeeper import free_port
from tests.unit.metrics_support import Samples, scrape, total, value
from tests.unit.replica_cluster_support import HOST, META_TIMINGS, WAIT_S, eventually, replica_config, run

LATENCY_COUNT = "pegasus_replica_request_duration_seconds_count"
ERRORS = "pegasus_replica_request_errors_total"


def test_every_server_serves_its_own_metrics_until_it_stops(tmp_path: Path) -> None:
    async def story() -> None:
        meta_port = free_port()
        meta = MetaServer(
            MetaServerConfig.model_validate(
                {
                    "host": HOST,
                    "port": 0,
                    "metrics_port": meta_port,
                    "store": {"kind": "local", "data_dir": str(tmp_path / "meta")},
                    **META_TIMINGS,
                }
            )
        )
        assert meta.metrics_url == ""  # not before it listens
        await meta.start()
        replicas: list[ReplicaServer] = []
        try:
            await meta.wait_until_leader(WAIT_S)
            assert meta.metrics_url == f"http://{HOST}:{meta_port}/metrics"
            for index in range(3):
                config = replica_config(tmp_path / f"replica{index}", meta.address, metrics_port=free_port())
                replicas.append(ReplicaServer(config))
                await replicas[-1].start()
            async with Client([meta.address], timeout=WAIT_S) as client:
                await client.create_table("temp", 4, 3)
                table = await client.open_table("temp")
                for index in range(10):
                    await table.set(f"user{index}".encode(), b"name", b"Ada")
                    assert await table.get(f"user{index}".encode(), b"name") == b"Ada"

            async def replica_samples() -> list[Samples]:
                return [await asyncio.to_thread(scrape, server.metrics_url) for server in replicas]

            async def every_partition_has_its_primary_and_secondaries() -> bool:
                scraped = await replica_samples()
                roles = {
                    role: sum(total(s, "pegasus_replica_replicas", role=role) for s in scraped)
                    for role in ("primary", "secondary")
                }
                return roles == {"primary": 4, "secondary": 8}

            await eventually(every_partition_has_its_primary_and_secondaries)
            scraped = await replica_samples()
            # Every request a server took is counted there; those refused (a client retrying while a
            # primary was not serving yet) also count as errors, so the rest are the 10 that succeeded.
            for op in ("set", "get"):
                taken = sum(total(s, LATENCY_COUNT, op=op, table="temp") for s in scraped)
                refused = sum(total(s, ERRORS, op=op, table="temp") for s in scraped)
                assert taken - refused == 10, (op, taken, refused)
            meta_samples = await asyncio.to_thread(scrape, meta.metrics_url)
            assert value(meta_samples, "pegasus_meta_is_leader") == 1
            assert value(meta_samples, "pegasus_meta_live_nodes") == 3
            assert value(meta_samples, "pegasus_meta_partitions", health="healthy") == 4
            assert value(meta_samples, "pegasus_meta_requests_total", type="create_table") == 1
        finally:
            urls = [server.metrics_url for server in replicas] + [meta.metrics_url]
            for server in replicas:
                await server.stop()
            await meta.stop()
        for url in urls:
            with pytest.raises(urllib.error.URLError):
                await asyncio.to_thread(scrape, url)

    run(story)
