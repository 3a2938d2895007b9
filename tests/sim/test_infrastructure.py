"""The simulator's own parts, tested on their own: if these lie, every simulated run lies."""

from __future__ import annotations

import functools

import pytest

from pegasus_kv.core.codec import Decoded, FrameKind
from pegasus_kv.core.errors import ErrorCode
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.messages import (
    CheckAndMutateResponse,
    CheckAndSetRequest,
    CheckType,
    DeleteRequest,
    ErrorReply,
    GetRequest,
    GetResponse,
    SetRequest,
    WriteResponse,
)
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.core.registry import Message
from pegasus_kv.replication.pacifica.config import PartitionConfiguration, PartitionStatus
from pegasus_kv.replication.pacifica.meta_requests import QueryConfigRequest, QueryConfigResponse
from pegasus_kv.testing.linearizability import Verdict, check_history
from tests.sim.checkers import AckedWrite, InvariantChecker, InvariantViolation, ReplicaView, content_of
from tests.sim.clients import ClientOptions, SimClient
from tests.sim.disk import Disk, DurableLog
from tests.sim.network import Handler, LinkFaults, Network
from tests.sim.scheduler import Scheduler, SimulationError
from tests.sim.storage import Checkpoint, KvStore

GPID = Gpid(1, 0)


def Note(text: str) -> ErrorReply:
    """Any registered message will do as a note between test nodes."""
    return ErrorReply(code=0, message=text)


# --- scheduler -------------------------------------------------------------------------------------


def run_order(seed: int) -> list[int]:
    scheduler = Scheduler(seed)
    order: list[int] = []
    for i in range(20):
        scheduler.after(scheduler.rng.randint(0, 5), f"e{i}", functools.partial(order.append, i))
    while scheduler.step():
        pass
    return order


def test_one_seed_always_runs_events_in_one_order() -> None:
    assert run_order(7) == run_order(7)
    assert run_order(7) != run_order(8)


def test_events_at_the_same_time_run_in_the_order_they_were_scheduled() -> None:
    scheduler = Scheduler(1)
    order: list[str] = []
    for name in "abc":
        scheduler.at(10, name, functools.partial(order.append, name))
    scheduler.run_until(10)
    assert order == ["a", "b", "c"]
    assert scheduler.now_ms == 10


def test_a_cancelled_timer_never_fires_and_the_past_cannot_be_scheduled() -> None:
    scheduler = Scheduler(1)
    fired: list[str] = []
    timer = scheduler.after(5, "t", lambda: fired.append("t"))
    timer.cancel()
    scheduler.run_until(100)
    assert fired == []
    with pytest.raises(SimulationError):
        scheduler.at(50, "late", lambda: None)


# --- network ---------------------------------------------------------------------------------------


def wired(faults: LinkFaults, seed: int = 3) -> tuple[Scheduler, Network, list[tuple[str, str]]]:
    scheduler = Scheduler(seed)
    network = Network(scheduler, faults)
    inbox: list[tuple[str, str]] = []

    def receiver(node: str) -> Handler:
        def receive(src: str, frame: Decoded) -> None:
            assert isinstance(frame.message, ErrorReply)
            inbox.append((f"{src}->{node}", frame.message.message))

        return receive

    for node in ("a", "b", "c"):
        network.attach(node, receiver(node))
    return scheduler, network, inbox


def test_a_reliable_network_delivers_everything_once() -> None:
    scheduler, network, inbox = wired(LinkFaults())
    for i in range(50):
        network.send("a", "b", Note(str(i)))
    scheduler.run_until(1_000)
    assert sorted(int(text) for _, text in inbox) == list(range(50))


def test_a_lossy_network_loses_some_messages_and_duplicates_others() -> None:
    scheduler, network, inbox = wired(LinkFaults(loss=0.3, duplicate=0.3))
    for i in range(400):
        network.send("a", "b", Note(str(i)))
    scheduler.run_until(1_000)
    texts = [text for _, text in inbox]
    assert 0 < network.stats.lost < 400 and network.stats.duplicated > 0
    assert len(set(texts)) < 400  # some never arrived
    assert len(texts) > len(set(texts))  # some arrived twice


def test_client_requests_are_never_duplicated() -> None:
    scheduler, network, inbox = wired(LinkFaults(duplicate=0.9))
    for i in range(100):
        network.send("a", "b", Note(str(i)), may_duplicate=False)
    scheduler.run_until(1_000)
    assert len(inbox) == 100


def test_reordering_lets_later_messages_overtake_earlier_ones() -> None:
    scheduler, network, inbox = wired(LinkFaults(reorder=0.5, min_delay_ms=1, max_delay_ms=1))
    for i in range(100):
        network.send("a", "b", Note(str(i)))
        scheduler.run_until(scheduler.now_ms + 1)
    scheduler.run_until(10_000)
    received = [int(text) for _, text in inbox]
    assert sorted(received) == list(range(100))
    assert received != list(range(100))


def test_a_partition_cuts_both_ways_including_messages_in_flight_and_heals() -> None:
    scheduler, network, inbox = wired(LinkFaults(min_delay_ms=5, max_delay_ms=5))
    network.send("a", "c", Note("in flight"))
    network.partition({"a"}, {"b", "c"})
    network.send("b", "a", Note("cut"))
    network.send("b", "c", Note("same side"))
    scheduler.run_until(100)
    assert inbox == [("b->c", "same side")]
    network.heal()
    network.send("b", "a", Note("healed"))
    scheduler.run_until(200)
    assert inbox[-1] == ("b->a", "healed")


def test_a_one_way_cut_is_asymmetric() -> None:
    scheduler, network, inbox = wired(LinkFaults())
    network.cut_one_way("a", "b")
    network.send("a", "b", Note("lost"))
    network.send("b", "a", Note("arrives"))
    scheduler.run_until(100)
    assert inbox == [("b->a", "arrives")]


def test_a_crashed_node_receives_nothing_and_receivers_never_share_objects() -> None:
    scheduler = Scheduler(1)
    network = Network(scheduler)
    received: list[object] = []
    network.attach("b", lambda src, frame: received.append(frame.message))
    note = Note("x")
    network.send("a", "b", note)
    network.send("a", "b", note)
    scheduler.run_until(100)
    assert received == [note, note]
    assert received[0] is not note and received[0] is not received[1]
    network.detach("b")
    network.send("a", "b", note)
    scheduler.run_until(200)
    assert len(received) == 2


# --- disk ------------------------------------------------------------------------------------------


def test_an_fsync_completes_later_and_makes_the_writes_before_it_durable() -> None:
    scheduler = Scheduler(5)
    disk = Disk("r1", scheduler)
    log = disk.file("log", str)
    log.append("one")
    log.append("two")
    done: list[int] = []
    disk.fsync("log", lambda end: done.append(end))
    log.append("three")  # after the fsync was issued: not covered by it
    assert log.durable_records() == []
    scheduler.run_until(100)
    assert done == [2]  # the fsync covered the first two records
    assert log.durable_records() == ["one", "two"]


def test_a_crash_loses_only_an_unsynced_suffix() -> None:
    for seed in range(30):
        scheduler = Scheduler(seed)
        disk = Disk("r1", scheduler)
        log = disk.file("log", int)
        for i in range(5):
            log.append(i)
        disk.fsync("log", lambda end: None)
        scheduler.run_until(100)
        for i in range(5, 10):
            log.append(i)
        disk.crash()
        assert log.records == list(range(len(log.records)))  # a prefix, never a hole
        assert 5 <= len(log.records) <= 10


def test_an_fsync_cut_short_by_a_crash_never_completes() -> None:
    scheduler = Scheduler(5)
    disk = Disk("r1", scheduler)
    disk.file("log", int).append(1)
    done: list[bool] = []
    disk.fsync("log", lambda end: done.append(True))
    disk.crash()
    scheduler.run_until(100)
    assert done == []


def test_a_lying_disk_acknowledges_an_fsync_it_did_not_do() -> None:
    scheduler = Scheduler(5)
    disk = Disk("r1", scheduler)
    disk.lies_about_fsync = True
    log = disk.file("log", int)
    log.append(1)
    done: list[bool] = []
    disk.fsync("log", lambda end: done.append(True))
    scheduler.run_until(100)
    assert done == [True]
    assert log.durable_records() == []


def test_log_garbage_collection_keeps_absolute_positions() -> None:
    log: DurableLog[int] = DurableLog("log")
    for i in range(10):
        log.append(i)
    log.mark_durable(8)
    log.truncate_front(5)
    assert log.base == 5 and log.end == 10 and log.durable_records() == [5, 6, 7]
    with pytest.raises(SimulationError):
        log.truncate_front(9)  # beyond what is durable


# --- storage ---------------------------------------------------------------------------------------


def mutation(decree: int, *writes: SetRequest | DeleteRequest | CheckAndSetRequest) -> Mutation:
    return Mutation(ballot=1, decree=decree, timestamp_us=decree * 1000, writes=list(writes))


def cas(expected: bytes | None, value: bytes) -> CheckAndSetRequest:
    return CheckAndSetRequest(
        b"h",
        check_sort_key=b"s",
        check_type=CheckType.VALUE_NOT_EXIST if expected is None else CheckType.VALUE_BYTES_EQUAL,
        check_operand=expected or b"",
        set_sort_key=b"s",
        set_value=value,
    )


def test_the_store_applies_mutations_in_decree_order_with_pegasus_check_semantics() -> None:
    store = KvStore()
    assert store.apply(mutation(1, cas(None, b"a"))) == [CheckAndMutateResponse(passed=True)]
    assert store.apply(mutation(2, cas(None, b"x"))) == [CheckAndMutateResponse(passed=False)]
    assert store.apply(mutation(3, cas(b"a", b"b"), SetRequest(b"h", b"t", b"v"))) == [
        CheckAndMutateResponse(passed=True),
        WriteResponse(decree=3),
    ]
    assert store.get(b"h", b"s") == b"b" and store.get(b"h", b"t") == b"v"
    store.apply(mutation(4, DeleteRequest(b"h", b"s")))
    assert store.get(b"h", b"s") is None
    assert store.apply(mutation(5, cas(b"b", b"c"))) == [CheckAndMutateResponse(passed=False)]
    with pytest.raises(SimulationError):
        store.apply(mutation(7))


def test_a_crashed_store_falls_back_to_its_checkpoint() -> None:
    store = KvStore()
    store.apply(mutation(1, SetRequest(b"h", b"s", b"1")))
    checkpoint = store.make_checkpoint()
    store.apply(mutation(2, SetRequest(b"h", b"s", b"2")))
    store.crash()
    assert store.last_applied_decree == 1 and store.get(b"h", b"s") == b"1"
    learner = KvStore()
    learner.install_checkpoint(checkpoint)
    assert learner.last_applied_decree == 1 and learner.get(b"h", b"s") == b"1"
    assert KvStore(Checkpoint(1, {(b"h", b"s"): b"1"})).get(b"h", b"s") == b"1"


# --- checkers --------------------------------------------------------------------------------------


def view(
    node: str, ballot: int, status: PartitionStatus, serving: bool = False, committed: int = 0
) -> ReplicaView:
    return ReplicaView(node, GPID, ballot, status, serving, committed)


def test_two_primaries_in_one_ballot_are_caught() -> None:
    checker = InvariantChecker()
    checker.observe([view("r1", 3, PartitionStatus.PRIMARY)], 0)
    checker.observe([view("r1", 4, PartitionStatus.SECONDARY), view("r2", 4, PartitionStatus.PRIMARY)], 1)
    with pytest.raises(InvariantViolation, match="two primaries in ballot 3"):
        checker.observe([view("r2", 3, PartitionStatus.PRIMARY)], 2)


def test_two_primaries_serving_at_once_are_caught_even_in_different_ballots() -> None:
    checker = InvariantChecker()
    with pytest.raises(InvariantViolation, match="serving"):
        checker.observe(
            [
                view("r1", 3, PartitionStatus.PRIMARY, serving=True),
                view("r2", 4, PartitionStatus.PRIMARY, serving=True),
            ],
            0,
        )


def test_a_decree_holding_different_mutations_is_caught() -> None:
    checker = InvariantChecker()
    checker.on_apply("r1", GPID, mutation(1, SetRequest(b"h", b"s", b"a")))
    checker.on_apply("r2", GPID, mutation(1, SetRequest(b"h", b"s", b"a")))
    with pytest.raises(InvariantViolation, match="different mutations"):
        checker.on_apply("r3", GPID, mutation(1, SetRequest(b"h", b"s", b"b")))


def test_a_committed_decree_going_back_without_a_restart_is_caught() -> None:
    checker = InvariantChecker()
    checker.observe([view("r1", 1, PartitionStatus.SECONDARY, committed=5)], 0)
    checker.on_restart("r1", lambda node, gpid: 0)  # nothing applied yet: nothing to recover
    checker.observe([view("r1", 1, PartitionStatus.SECONDARY, committed=2)], 1)  # fine after a restart
    with pytest.raises(InvariantViolation, match="went back"):
        checker.observe([view("r1", 1, PartitionStatus.SECONDARY, committed=1)], 2)


def test_a_restart_that_cannot_recover_what_was_applied_is_caught() -> None:
    checker = InvariantChecker()
    for decree in (1, 2, 3):
        checker.on_apply("r1", GPID, mutation(decree))
    checker.on_restart("r1", lambda node, gpid: 3)
    with pytest.raises(InvariantViolation, match="shrank"):
        checker.on_restart("r1", lambda node, gpid: 2)


def test_an_ack_must_name_a_committed_decree_holding_the_write_and_stay_durable() -> None:
    checker = InvariantChecker()
    write = SetRequest(b"h", b"s", b"a")
    with pytest.raises(InvariantViolation, match="never applied"):
        checker.on_ack(AckedWrite(GPID, 1, write, "c1", 0))
    checker.on_apply("r1", GPID, mutation(1, SetRequest(b"h", b"s", b"other")))
    with pytest.raises(InvariantViolation, match="lacks its write"):
        checker.on_ack(AckedWrite(GPID, 1, write, "c1", 0))
    checker.on_apply("r1", GPID, mutation(2, write))
    checker.on_ack(AckedWrite(GPID, 2, write, "c1", 0))
    expected = content_of(mutation(2, write))
    checker.check_acked_durable(["r1"], lambda node, gpid, decree, content: content == expected)
    with pytest.raises(InvariantViolation, match="no durable copy"):
        checker.check_acked_durable(["r1", "r2"], lambda node, gpid, decree, content: False)


# --- clients against a single in-memory server -----------------------------------------------------


class OneServer:
    """A trivially linearizable server: one store, every write applied on arrival. With
    `stale_reads`, it answers reads from a copy that lags one write behind (a deposed primary)."""

    def __init__(
        self, scheduler: Scheduler, network: Network, checker: InvariantChecker, stale_reads: bool
    ) -> None:
        self.scheduler = scheduler
        self.network = network
        self.checker = checker
        self.store = KvStore()
        self.lagging = KvStore()
        self.stale_reads = stale_reads
        self.pending: Mutation | None = None
        network.attach("server", self.on_message)

    def reply(self, to: str, frame: Decoded, message: Message) -> None:
        self.network.send("server", to, message, request_id=frame.request_id, kind=FrameKind.RESPONSE)

    def on_message(self, src: str, frame: Decoded) -> None:
        request = frame.message
        if isinstance(request, QueryConfigRequest):
            config = PartitionConfiguration(gpid=GPID, ballot=1, primary="server")
            self.reply(
                src,
                frame,
                QueryConfigResponse(app_id=1, partition_count=1, replica_count=1, configs=[config]),
            )
            return
        assert frame.gpid == GPID
        if isinstance(request, GetRequest):
            store = self.lagging if self.stale_reads else self.store
            self.reply(src, frame, GetResponse(store.get(request.hash_key, request.sort_key)))
            return
        if self.scheduler.rng.random() < 0.1:
            self.reply(src, frame, ErrorReply(ErrorCode.NOT_PRIMARY))
            return
        assert isinstance(request, SetRequest | DeleteRequest | CheckAndSetRequest)
        applied = mutation(self.store.last_applied_decree + 1, request)
        (result,) = self.store.apply(applied)
        self.checker.on_apply("server", GPID, applied)
        if self.pending is not None:
            self.lagging.apply(self.pending)
        self.pending = applied
        self.reply(src, frame, result)


def run_clients(seed: int, stale_reads: bool, loss: float) -> tuple[list[SimClient], InvariantChecker]:
    scheduler = Scheduler(seed)
    network = Network(scheduler, LinkFaults(loss=loss, min_delay_ms=1, max_delay_ms=20))
    checker = InvariantChecker()
    OneServer(scheduler, network, checker, stale_reads)
    keys = [(b"h0", b"s"), (b"h1", b"s")]
    clients = [
        SimClient(
            f"c{i}", scheduler, network, checker, "server", "temp", keys, ClientOptions(request_timeout_ms=30)
        )
        for i in range(3)
    ]
    for client in clients:
        client.start()
    scheduler.run_until(3_000)
    return clients, checker


def test_clients_against_a_linearizable_server_record_linearizable_histories() -> None:
    for seed in range(5):
        clients, checker = run_clients(seed, stale_reads=False, loss=0.05)
        history = [op for client in clients for op in client.history]
        assert sum(client.stats.completed for client in clients) > 100
        assert any(op.pending for op in history)  # losses made some outcomes unknown
        assert checker.acked
        result = check_history(history)
        assert result.verdict is Verdict.OK, result.explain()


def test_clients_against_a_server_with_stale_reads_record_a_non_linearizable_history() -> None:
    clients, _ = run_clients(1, stale_reads=True, loss=0.0)
    result = check_history([op for client in clients for op in client.history])
    assert result.verdict is Verdict.NOT_LINEARIZABLE
