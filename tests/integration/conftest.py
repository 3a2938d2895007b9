"""Fixtures the ZooKeeper suites share: one real ZooKeeper per module (started by the project's own
launcher, pegasus_kv/testing/zookeeper.py) and a fresh cluster name per test, so that tests never
meet each other's znodes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pegasus_kv.testing.zookeeper import ZooKeeperServer, ZooKeeperUnavailableError


@pytest.fixture(scope="module")
def zookeeper() -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer()
    try:
        server.start()
    except ZooKeeperUnavailableError as exc:
        pytest.fail(f"these tests need a real ZooKeeper and none could be started: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster() -> str:
    """A cluster name of this test's own (a module may define its own `cluster` fixture instead)."""
    return f"test-{uuid.uuid4().hex[:12]}"
