"""Stories of a replica's disk: a crash that loses the store's memtable, a server that lost its disk.

RocksDB runs without its WAL (the mutation log is the WAL), so a crash leaves the store at its last
flush. The first story copies a live replica's directory as a crash would leave it and reopens the
copy: the log, whose records carry the replica's commit point, brings the data back. The second
wipes a stopped server's data directory; when it comes back, meta adds it as a learner and it copies
each partition from a checkpoint streamed over the network (its primaries have collected their logs
meanwhile).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pegasus_kv import Client
from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import GetRequest, GetResponse, SetRequest, WriteResponse
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.node import ReplicaNode
from pegasus_kv.replication.pacifica.ready import Apply, ClientToken, Outbound
from pegasus_kv.replication.replica.layout import APPLIED_DECREE_FILE, ReplicaPaths
from pegasus_kv.replication.replica.mutation_log import MutationLogOptions
from pegasus_kv.replication.replica.replica_runtime import ReplicaRuntime, RuntimeSettings
from pegasus_kv.storage import StoreOptions
from tests.unit.replica_cluster_support import Cluster, eventually, run

GPID = Gpid(1, 0)
CAPACITY = 16


class RecordingHost:
    """The server side of a runtime, reduced to what the story looks at."""

    def __init__(self) -> None:
        self.durable: list[tuple[int, int]] = []
        self.answers: dict[ClientToken, Message] = {}
        self.failures: list[str] = []

    def on_log_durable(self, runtime: ReplicaRuntime, ballot: int, decree: int) -> None:
        self.durable.append((ballot, decree))

    def send_to_peer(self, outbound: Outbound) -> None:
        raise AssertionError("nothing is sent in this story")

    def answer_writes(self, tokens: Sequence[ClientToken], replies: Sequence[Message]) -> None:
        for token, reply in zip(tokens, replies, strict=True):
            self.answers[token] = reply

    def refuse_write(self, token: ClientToken, code: ErrorCode, reason: str) -> None:
        raise AssertionError(f"write {token} refused: {code.name} {reason}")

    def on_local_failure(self, runtime: ReplicaRuntime, reason: str) -> None:
        self.failures.append(reason)


def settings() -> RuntimeSettings:
    return RuntimeSettings(
        log_options=MutationLogOptions(),
        store_options=StoreOptions(),
        prepare_list_capacity=CAPACITY,
    )


def mutation(decree: int) -> Mutation:
    return Mutation(
        ballot=3,
        decree=decree,
        timestamp_us=1_700_000_000_000_000 + decree,
        writes=[SetRequest(b"hk", b"sk%03d" % decree, b"value %d" % decree)],
    )


def test_a_crash_loses_the_memtable_and_the_log_brings_the_writes_back(tmp_path: Path) -> None:
    async def story() -> None:
        executor = ThreadPoolExecutor(2)
        host = RecordingHost()
        live = ReplicaRuntime(
            GPID,
            ReplicaPaths(tmp_path / "live", GPID),
            settings(),
            host,
            executor=executor,
            log_executor=executor,
        )
        await live.open(fresh=True)
        # 50 committed mutations, more than the prepare list can hold: logged, applied, answered,
        # as a replica does it (each logged when prepared, applied once committed).
        mutations = [mutation(decree) for decree in range(1, 51)]
        for m in mutations:
            live.persist([m])
            live.apply([Apply(m, (m.decree,))])
        await eventually(lambda: _true(host.durable[-1:] == [(3, 50)] and live.applied_decree == 50))
        assert host.answers[50] == WriteResponse(decree=50)

        # The crash image: every file as it is on disk now. The store was never flushed, so its
        # copy stands at decree 0; the log is durable, and nothing wrote the applied_decree file.
        crashed = tmp_path / "crashed"
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, shutil.copytree, tmp_path / "live", crashed)
        assert not (crashed / "replicas" / "1.0" / APPLIED_DECREE_FILE).exists()
        await live.close(drain_s=1.0)

        reopened = ReplicaRuntime(
            GPID,
            ReplicaPaths(crashed, GPID),
            settings(),
            RecordingHost(),
            executor=executor,
            log_executor=executor,
        )
        recovered = await reopened.open(fresh=False)
        # Everything the log's records vouch for (decree 49, the last record's commit point) is
        # re-applied; only the records after it go to the core.
        assert recovered.reapplied == 49
        assert (
            recovered.last_committed_decree
            + len([m for m in recovered.log if m.decree > recovered.last_committed_decree])
            == 50
        )
        assert reopened.read_now(GetRequest(b"hk", b"sk001")) == GetResponse(b"value 1")

        # The replica core takes it from there: it holds every decree up to 50.
        node = ReplicaNode("127.0.0.1:1")
        replica = node.load_replica(
            GPID,
            last_committed_decree=recovered.last_committed_decree,
            log=recovered.log,
            log_start_decree=recovered.log_start_decree,
            ballot=recovered.ballot,
        )
        assert replica.max_prepared_decree == 50
        assert replica.ballot == 3
        await reopened.close(drain_s=1.0)

        # A log whose records vouch for nothing (written before anything was applied) and no
        # applied_decree file: the core still gets the log after the store's decree, as much as its
        # prepare list holds (the replica then learns the rest from its primary).
        bare_live = ReplicaRuntime(
            GPID,
            ReplicaPaths(tmp_path / "bare-live", GPID),
            settings(),
            RecordingHost(),
            executor=executor,
            log_executor=executor,
        )
        await bare_live.open(fresh=True)
        bare_live.persist(mutations)
        await eventually(lambda: _true(bare_live.durable_pending == 0))
        crashed_bare = tmp_path / "crashed-bare"
        await asyncio.get_running_loop().run_in_executor(
            executor, shutil.copytree, tmp_path / "bare-live", crashed_bare
        )
        await bare_live.close(drain_s=1.0)
        bare = ReplicaRuntime(
            GPID,
            ReplicaPaths(crashed_bare, GPID),
            settings(),
            RecordingHost(),
            executor=executor,
            log_executor=executor,
        )
        recovered = await bare.open(fresh=False)
        assert recovered.reapplied == 0
        assert recovered.last_committed_decree == 0
        tail = [m.decree for m in recovered.log if m.decree > recovered.last_committed_decree]
        assert tail == list(range(1, 1 + CAPACITY))
        await bare.close(drain_s=1.0)
        executor.shutdown()

    run(story)


async def _true(value: bool) -> bool:
    return value


def test_a_server_that_lost_its_disk_learns_its_partitions_from_streamed_checkpoints(tmp_path: Path) -> None:
    # Small prepare lists, small log segments collected often, small chunks: learning must go
    # through a checkpoint, streamed in many pieces.
    overrides = {
        "prepare_list_capacity": 8,
        "max_inflight_mutations": 4,
        "flush_interval_s": 0.3,
        "sweep_interval_s": 0.3,
        "learn_chunk_bytes": 4096,
        "log": {"segment_bytes": 4096},
    }

    async def story() -> None:
        async with Cluster(tmp_path, replica_overrides=overrides) as cluster:
            await cluster.create_table("temp", 2)
            await cluster.wait_healthy("temp")
            async with Client(cluster.meta.address) as client:
                table = await client.open_table("temp")
                for n in range(120):
                    await table.set(b"k%d" % n, b"s", b"value %d" % n * 10)

                lost = cluster.replicas[0]
                address = lost.address
                await lost.stop()
                shutil.rmtree(tmp_path / "replica0")
                await cluster.wait_healthy("temp", members=2)

                # The primaries' logs no longer start at decree 1: a learner cannot be fed from them.
                async def logs_collected() -> bool:
                    for server in cluster.replicas[1:]:
                        for gpid in server.node.gpids():
                            runtime = server.runtime(gpid)
                            if runtime is None or runtime.log.first_decree <= 1:
                                return False
                    return True

                await eventually(logs_collected)
                assert all(server.maintenance.flushes > 0 for server in cluster.replicas[1:])
                assert all(server.maintenance.sweeps > 0 for server in cluster.replicas[1:])

                reborn = await cluster.restart_replica(0)
                assert reborn.node.gpids() == []
                configs = await cluster.wait_healthy("temp", members=3)
                assert all(address in config.members for config in configs)

                # Its own stores hold every record (looked at directly, whatever its role).
                def held(n: int) -> bytes | None:
                    for gpid in reborn.node.gpids():
                        runtime = reborn.runtime(gpid)
                        assert runtime is not None
                        reply = runtime.read_now(GetRequest(b"k%d" % n, b"s"))
                        assert isinstance(reply, GetResponse)
                        if reply.value is not None:
                            return reply.value
                    return None

                async def caught_up() -> bool:
                    return all(held(n) == b"value %d" % n * 10 for n in range(120))

                await eventually(caught_up)

                # And it serves, once another server is gone.
                await cluster.replicas[1].stop()
                await cluster.wait_healthy("temp", members=2)
                assert [await table.get(b"k%d" % n, b"s") for n in range(120)] == [
                    b"value %d" % n * 10 for n in range(120)
                ]
                written = await cluster.write("temp", SetRequest(b"after", b"s", b"v"), b"after")
                assert isinstance(written, WriteResponse)

    run(story)


def test_a_power_loss_that_takes_the_private_logs_unsynced_bytes_loses_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    """Under fsync policy `group` a replica server syncs one shared log per group-commit round and
    leaves its replicas' own logs unsynced. A power loss of the whole cluster then leaves those
    logs' segments with their sizes but not their bytes (and the stores at their last flush, here
    none): at the restart, each server's shared log writes the acknowledged records back before its
    replicas replay their logs, and every acknowledged write is there."""

    async def story() -> None:
        async with Cluster(tmp_path) as cluster:
            await cluster.create_table("temp", 2)
            await cluster.wait_healthy("temp")
            async with Client(cluster.meta.address) as client:
                table = await client.open_table("temp")
                for n in range(40):
                    await table.set(b"k%d" % n, b"s", b"value %d" % n)

                # Every server's disk as the power loss leaves it, taken while they run (every
                # write above acknowledged).
                loop = asyncio.get_running_loop()
                for index, server in enumerate(cluster.replicas):
                    assert server.config.log.fsync_policy == "group"
                    await loop.run_in_executor(
                        None, shutil.copytree, tmp_path / f"replica{index}", tmp_path / f"lost{index}"
                    )
                for server in cluster.replicas:
                    await server.stop()
                for index in range(len(cluster.replicas)):
                    shutil.rmtree(tmp_path / f"replica{index}")
                    (tmp_path / f"lost{index}").rename(tmp_path / f"replica{index}")
                    segments = sorted((tmp_path / f"replica{index}").glob("replicas/*/log/mlog.*"))
                    assert segments
                    for segment in segments:  # never synced: the size survived, the bytes did not
                        segment.write_bytes(bytes(segment.stat().st_size))

                for index in range(len(cluster.replicas)):
                    await cluster.restart_replica(index)
                await cluster.wait_healthy("temp")
                assert [await table.get(b"k%d" % n, b"s") for n in range(40)] == [
                    b"value %d" % n for n in range(40)
                ]

    run(story)
