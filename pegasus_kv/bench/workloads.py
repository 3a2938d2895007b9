"""The YCSB core workloads A-F (their operation mixes and key distributions), plus write-only and
read-only, as in YCSB's workloads/workload[a-f] files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pegasus_kv.bench.generators import (
    RandomSource,
    ScrambledZipfianGenerator,
    SkewedLatestGenerator,
    UniformGenerator,
)


class Operation(StrEnum):
    READ = "READ"
    UPDATE = "UPDATE"
    INSERT = "INSERT"
    SCAN = "SCAN"
    READ_MODIFY_WRITE = "READ-MODIFY-WRITE"


class KeyDistribution(StrEnum):
    UNIFORM = "uniform"
    ZIPFIAN = "zipfian"
    LATEST = "latest"


@dataclass(frozen=True)
class Workload:
    name: str
    mix: tuple[tuple[Operation, float], ...]  # proportions summing to 1
    distribution: KeyDistribution
    max_scan_length: int = 100  # YCSB workload E: scan length uniform in 1..100

    def proportion(self, operation: Operation) -> float:
        return sum(share for op, share in self.mix if op is operation)


WORKLOADS: dict[str, Workload] = {
    "a": Workload("a", ((Operation.READ, 0.5), (Operation.UPDATE, 0.5)), KeyDistribution.ZIPFIAN),
    "b": Workload("b", ((Operation.READ, 0.95), (Operation.UPDATE, 0.05)), KeyDistribution.ZIPFIAN),
    "c": Workload("c", ((Operation.READ, 1.0),), KeyDistribution.ZIPFIAN),
    "d": Workload("d", ((Operation.READ, 0.95), (Operation.INSERT, 0.05)), KeyDistribution.LATEST),
    "e": Workload("e", ((Operation.SCAN, 0.95), (Operation.INSERT, 0.05)), KeyDistribution.ZIPFIAN),
    "f": Workload("f", ((Operation.READ, 0.5), (Operation.READ_MODIFY_WRITE, 0.5)), KeyDistribution.ZIPFIAN),
    "write-only": Workload("write-only", ((Operation.UPDATE, 1.0),), KeyDistribution.UNIFORM),
    "read-only": Workload("read-only", ((Operation.READ, 1.0),), KeyDistribution.UNIFORM),
}


def choose_operation(workload: Workload, rng: RandomSource) -> Operation:
    draw = rng.random()
    for operation, share in workload.mix:
        if draw < share:
            return operation
        draw -= share
    return workload.mix[-1][0]  # float rounding at the very top of the range


class KeyChooser:
    """The key number of the next read / update / scan / read-modify-write.

    Keys 0..record_count-1 exist after the load phase; inserts of this worker add newer keys
    (`inserted`). Zipfian draws over the loaded keys plus room for the expected inserts and, like
    YCSB, redraws a key that does not exist yet.
    """

    MAX_REDRAWS = 1000

    def __init__(
        self, workload: Workload, record_count: int, expected_inserts: int, rng: RandomSource
    ) -> None:
        if record_count < 1:
            raise ValueError(f"record count must be >= 1, got {record_count}")
        self._rng = rng
        self._newest = record_count - 1
        self._distribution = workload.distribution
        self._uniform = UniformGenerator(0, record_count - 1, rng)
        self._zipfian = ScrambledZipfianGenerator(0, record_count + max(0, expected_inserts) - 1, rng)
        self._latest = SkewedLatestGenerator(record_count - 1, rng)

    @property
    def drawer(self) -> Callable[[], int]:
        """next_key, or a callable that always returns what next_key would, in fewer steps.

        A zipfian chooser with no room for inserts draws from the loaded keys only, none newer
        than the newest key: next_key never redraws and is its generator's next_value.
        """
        if self._distribution is KeyDistribution.ZIPFIAN and self._zipfian.item_count == self._newest + 1:
            return self._zipfian.next_value
        return self.next_key

    def inserted(self, key_number: int) -> None:
        self._newest = max(self._newest, key_number)
        self._latest.advance(key_number)

    def next_key(self) -> int:
        if self._distribution is KeyDistribution.LATEST:
            return self._latest.next_value()
        if self._distribution is KeyDistribution.UNIFORM:
            return self._rng.randint(0, self._newest)
        key_number = self._zipfian.next_value()
        if key_number <= self._newest:  # nearly always: the redraw loop only for inserts' room
            return key_number
        for _ in range(self.MAX_REDRAWS - 1):
            key_number = self._zipfian.next_value()
            if key_number <= self._newest:
                return key_number
        return self._uniform.next_value()
