"""Fixtures of the partition-store tests: a store in tmp_path, its clock, a writer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pegasus_kv.storage import PartitionStore

from .storage_fixtures import FakeClock, Writer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[PartitionStore]:
    opened = PartitionStore.open(str(tmp_path / "replica"), clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def writer(store: PartitionStore, clock: FakeClock) -> Writer:
    return Writer(store, clock)
