"""Stories of the replica's ballot record: a ballot must outlive the log records that carried it.

PacificA uses each ballot once (a primary hands out decrees under its ballot; a second primary under
the same ballot could hand out the same decree again). A replica's ballot lives in its log, and log
collection deletes records; so the runtime keeps the highest ballot ever made durable in the small
`max_ballot` file (layout.py) and gives it back to the core on restart (ready.py, `persist`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import SetRequest
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.node import ReplicaNode
from pegasus_kv.replication.pacifica.ready import Apply, ClientToken, Outbound
from pegasus_kv.replication.replica.layout import (
    MAX_BALLOT_FILE,
    ReplicaPaths,
    prepare_fresh,
    read_max_ballot,
    write_max_ballot,
)
from pegasus_kv.replication.replica.log_segment import parse_segment_file_name
from pegasus_kv.replication.replica.mutation_log import MutationLogOptions
from pegasus_kv.replication.replica.replica_runtime import ReplicaRuntime, RuntimeSettings
from pegasus_kv.storage import StoreOptions
from tests.unit.replica_cluster_support import eventually, run

GPID = Gpid(1, 0)


class BallotCheckingHost:
    """Records durable reports, and what the ballot file said at the moment of each report."""

    def __init__(self, paths: ReplicaPaths) -> None:
        self.paths = paths
        self.durable: list[tuple[int, int]] = []
        self.recorded_at_report: list[int] = []
        self.failures: list[str] = []

    def on_log_durable(self, runtime: ReplicaRuntime, ballot: int, decree: int) -> None:
        self.durable.append((ballot, decree))
        self.recorded_at_report.append(read_max_ballot(self.paths))

    def send_to_peer(self, outbound: Outbound) -> None:
        raise AssertionError("nothing is sent in this story")

    def answer_writes(self, tokens: Sequence[ClientToken], replies: Sequence[Message]) -> None:
        pass

    def refuse_write(self, token: ClientToken, code: ErrorCode, reason: str) -> None:
        raise AssertionError(f"write {token} refused: {code.name} {reason}")

    def on_local_failure(self, runtime: ReplicaRuntime, reason: str) -> None:
        self.failures.append(reason)


def settings() -> RuntimeSettings:
    return RuntimeSettings(
        log_options=MutationLogOptions(),
        store_options=StoreOptions(),
        prepare_list_capacity=16,
    )


def mutation(ballot: int, decree: int) -> Mutation:
    return Mutation(
        ballot=ballot,
        decree=decree,
        timestamp_us=1_700_000_000_000_000 + decree,
        writes=[SetRequest(b"hk", b"sk%03d" % decree, b"value %d" % decree)],
    )


def test_a_replica_whose_log_lost_every_record_of_its_ballot_reopens_with_that_ballot(tmp_path: Path) -> None:
    async def story() -> None:
        executor = ThreadPoolExecutor(2)
        paths = ReplicaPaths(tmp_path, GPID)
        host = BallotCheckingHost(paths)
        runtime = ReplicaRuntime(GPID, paths, settings(), host, executor=executor, log_executor=executor)
        await runtime.open(fresh=True)

        async def durable_through(decree: int) -> bool:
            return bool(host.durable) and host.durable[-1][1] == decree and runtime.applied_decree == decree

        # Decrees 1-4 under ballot 3, then a new primary's decrees 5-6 under ballot 5, each logged,
        # committed and applied.
        first = [mutation(3, decree) for decree in range(1, 5)]
        runtime.persist(first)
        runtime.apply([Apply(m, ()) for m in first])
        await eventually(lambda: durable_through(4))
        runtime.persist([mutation(5, 5)])
        runtime.apply([Apply(mutation(5, 5), ())])
        await eventually(lambda: durable_through(5))
        record_of_ballot_5 = os.stat(paths.max_ballot_file).st_ino
        runtime.persist([mutation(5, 6)])
        runtime.apply([Apply(mutation(5, 6), ())])
        await eventually(lambda: durable_through(6))

        # The core never heard of a durable mutation whose ballot the file did not hold yet.
        assert host.failures == []
        reports = zip(host.durable, host.recorded_at_report, strict=True)
        assert all(recorded >= ballot for (ballot, _), recorded in reports)
        # Written once per ballot change, not per batch: the second ballot-5 batch left it alone.
        assert os.stat(paths.max_ballot_file).st_ino == record_of_ballot_5
        assert runtime.recorded_ballot == 5
        await runtime.close(drain_s=1.0)  # the store flushes: it stands at decree 6

        # The log is collected: the store holds every decree, so none of its records is needed any
        # more, and none of ballot 5 (or any other) is left.
        for entry in os.listdir(paths.log_dir):
            if parse_segment_file_name(entry) is not None:
                os.remove(paths.log_dir / entry)

        reopened = ReplicaRuntime(
            GPID, paths, settings(), BallotCheckingHost(paths), executor=executor, log_executor=executor
        )
        recovered = await reopened.open(fresh=False)
        assert reopened.log.max_ballot == 0  # the log itself forgot ballot 5
        assert recovered.last_committed_decree == 6
        assert recovered.log == []
        assert recovered.ballot == 5

        # The core will not take ballot 5 (or anything below) as new: meta must move past it.
        replica = ReplicaNode("127.0.0.1:1").load_replica(
            GPID,
            last_committed_decree=recovered.last_committed_decree,
            log=recovered.log,
            log_start_decree=recovered.log_start_decree,
            ballot=recovered.ballot,
        )
        assert replica.ballot == 5
        await reopened.close(drain_s=1.0)
        executor.shutdown()

    run(story)


def test_a_log_from_before_the_ballot_file_gets_its_ballot_recorded_on_reopen(tmp_path: Path) -> None:
    async def story() -> None:
        executor = ThreadPoolExecutor(2)
        paths = ReplicaPaths(tmp_path, GPID)
        host = BallotCheckingHost(paths)
        runtime = ReplicaRuntime(GPID, paths, settings(), host, executor=executor, log_executor=executor)
        await runtime.open(fresh=True)
        runtime.persist([mutation(4, 1)])
        await eventually(lambda: _true(host.durable == [(4, 1)]))
        await runtime.close(drain_s=1.0)
        paths.max_ballot_file.unlink()  # as an older server, or a crash before the record, left it

        reopened = ReplicaRuntime(
            GPID, paths, settings(), BallotCheckingHost(paths), executor=executor, log_executor=executor
        )
        recovered = await reopened.open(fresh=False)
        # The log still shows ballot 4, and the file learns it before collection could take it away.
        assert recovered.ballot == 4
        assert read_max_ballot(paths) == 4
        await reopened.close(drain_s=1.0)
        executor.shutdown()

    run(story)


def test_a_crash_midway_through_recording_a_ballot_leaves_the_previous_record(tmp_path: Path) -> None:
    paths = ReplicaPaths(tmp_path, GPID)
    prepare_fresh(paths)
    assert read_max_ballot(paths) == 0  # never recorded: a fresh replica
    write_max_ballot(paths, 7)

    # A crash while recording ballot 9: the new value only ever lives in a temporary file until the
    # rename, and a torn one is never read.
    (paths.root / (MAX_BALLOT_FILE + ".tmp")).write_bytes(b"9\x00\x00")
    assert read_max_ballot(paths) == 7

    # The next record goes through regardless of the leftover.
    write_max_ballot(paths, 9)
    assert read_max_ballot(paths) == 9
    assert not (paths.root / (MAX_BALLOT_FILE + ".tmp")).exists()


async def _true(value: bool) -> bool:
    return value
