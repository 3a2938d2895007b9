"""Prometheus metrics on a real onebox, read as an operator's scraper reads them: `onebox status`
names every server's /metrics; client traffic shows up in the request counters of table temp; the
replicas by role add up to the table's 8 partitions of 3 replicas; and when a replica server is
killed, meta counts it dead and reconfigures the partitions it held."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pegasus_kv import Client
from tests.integration.onebox_support import FAILOVER_BUDGET_S, onebox, running_onebox
from tests.unit.metrics_support import Samples, scrape, total, value

pytestmark = pytest.mark.integration

LATENCY_COUNT = "pegasus_replica_request_duration_seconds_count"
ERRORS = "pegasus_replica_request_errors_total"
PARTITIONS = 8
REPLICAS = 3


@pytest.fixture
def onebox_dir(tmp_path: Path) -> Iterator[Path]:
    with running_onebox(tmp_path / "onebox") as data_dir:
        yield data_dir


def scrape_all(urls: dict[str, str]) -> dict[str, Samples]:
    return {name: scrape(url) for name, url in urls.items()}


def replica_total(scraped: dict[str, Samples], name: str, **labels: str) -> float:
    return sum(
        total(samples, name, **labels) for node, samples in scraped.items() if node.startswith("replica")
    )


def succeeded(scraped: dict[str, Samples], op: str) -> float:
    """Requests of `op` on table temp that the replica servers answered without an error."""
    taken = replica_total(scraped, LATENCY_COUNT, op=op, table="temp")
    return taken - replica_total(scraped, ERRORS, op=op, table="temp")


def wait_for(what: str, check: Callable[[], bool], budget_s: float) -> None:
    deadline = time.monotonic() + budget_s
    while not check():
        assert time.monotonic() < deadline, f"not within {budget_s} s: {what}"
        time.sleep(0.2)


def test_metrics_follow_client_traffic_and_a_crashed_replica_server(onebox_dir: Path) -> None:
    status = json.loads(onebox("status", "--data-dir", str(onebox_dir), "--json").stdout)
    urls: dict[str, str] = status["metrics"]
    assert set(urls) == {"meta1", "replica1", "replica2", "replica3"}
    assert all(url.startswith("http://127.0.0.1:") and url.endswith("/metrics") for url in urls.values())
    human = onebox("status", "--data-dir", str(onebox_dir)).stdout
    assert all(url in human for url in urls.values())

    before = scrape_all(urls)
    meta: list[str] = status["meta"]

    async def write_and_read() -> None:
        async with Client(meta, timeout=10.0) as client:
            table = await client.open_table("temp")
            for index in range(20):
                await table.set(f"user{index}".encode(), b"name", f"n{index}".encode())
            for index in range(20):
                assert await table.get(f"user{index}".encode(), b"name") == f"n{index}".encode()

    asyncio.run(write_and_read())
    after = scrape_all(urls)
    assert succeeded(after, "set") - succeeded(before, "set") == 20
    assert succeeded(after, "get") - succeeded(before, "get") == 20

    # 8 partitions of 3 replicas over the cluster: 8 primaries and 16 secondaries (a balancer move
    # may be under way at any moment, so look until the counts settle on it).
    def roles_add_up() -> bool:
        scraped = scrape_all(urls)
        primaries = replica_total(scraped, "pegasus_replica_replicas", role="primary")
        secondaries = replica_total(scraped, "pegasus_replica_replicas", role="secondary")
        return (primaries, secondaries) == (PARTITIONS, PARTITIONS * (REPLICAS - 1))

    wait_for("8 primaries and 16 secondaries", roles_add_up, FAILOVER_BUDGET_S)
    meta_before = scrape(urls["meta1"])
    assert value(meta_before, "pegasus_meta_is_leader") == 1
    assert value(meta_before, "pegasus_meta_live_nodes") == 3
    assert value(meta_before, "pegasus_meta_dead_nodes") == 0
    assert value(meta_before, "pegasus_meta_partitions", health="healthy") == PARTITIONS
    assert total(meta_before, "pegasus_meta_config_changes_total") >= PARTITIONS * REPLICAS

    def replica1_dropped_or_replaced(samples: Samples) -> float:
        """Changes that take a member out: a dead secondary dropped, a dead primary replaced."""
        return sum(
            total(samples, "pegasus_meta_config_changes_total", config_type=kind)
            for kind in ("downgrade_to_inactive", "upgrade_to_primary")
        )

    removals_before = replica1_dropped_or_replaced(meta_before)

    killed = onebox("stop-node", "replica1", "--kill", "--data-dir", str(onebox_dir))
    assert killed.returncode == 0, killed.stderr

    def meta_declared_it_dead() -> bool:
        return value(scrape(urls["meta1"]), "pegasus_meta_dead_nodes") == 1

    wait_for("meta counts replica1 dead", meta_declared_it_dead, FAILOVER_BUDGET_S)
    assert value(scrape(urls["meta1"]), "pegasus_meta_live_nodes") == 2

    # Every partition had a member on replica1: meta takes it out of each one (dropping a
    # secondary, or promoting a secondary where replica1 was primary).
    def every_partition_reconfigured() -> bool:
        return replica1_dropped_or_replaced(scrape(urls["meta1"])) >= removals_before + PARTITIONS

    wait_for("a configuration change for every partition", every_partition_reconfigured, FAILOVER_BUDGET_S)
