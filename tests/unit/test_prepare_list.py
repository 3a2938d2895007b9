"""The prepare list: contiguous decrees, a commit point, replacement by newer ballots, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pegasus_kv.core.messages import SetRequest
from pegasus_kv.core.mutation import Mutation
from pegasus_kv.replication.pacifica.invariant import ReplicaInvariantError
from pegasus_kv.replication.pacifica.prepare_list import PrepareList


def mutation(decree: int, ballot: int = 1, value: str = "") -> Mutation:
    write = SetRequest(hash_key=b"k", sort_key=b"", value=(value or f"v{decree}b{ballot}").encode())
    return Mutation(ballot=ballot, decree=decree, timestamp_us=decree, writes=[write])


def test_prepared_mutations_commit_in_decree_order() -> None:
    plist = PrepareList(capacity=10)
    for decree in (1, 2, 3):
        assert plist.prepare(mutation(decree))
    assert (plist.last_committed_decree, plist.max_decree) == (0, 3)
    assert [m.decree for m in plist.commit(2)] == [1, 2]
    assert [m.decree for m in plist.commit(3)] == [3]
    assert plist.commit(3) == []


def test_a_gap_or_a_committed_decree_is_refused() -> None:
    plist = PrepareList(capacity=10)
    plist.prepare(mutation(1))
    with pytest.raises(ReplicaInvariantError, match="gap"):
        plist.prepare(mutation(3))
    plist.commit(1)
    with pytest.raises(ReplicaInvariantError, match="already committed"):
        plist.prepare(mutation(1, ballot=2))
    with pytest.raises(ReplicaInvariantError, match="beyond"):
        plist.commit(2)


def test_a_newer_ballot_replaces_an_entry_and_drops_what_followed_it() -> None:
    plist = PrepareList(capacity=10)
    for decree in (1, 2, 3):
        plist.prepare(mutation(decree, ballot=1))
    plist.commit(1)
    assert plist.prepare(mutation(2, ballot=2))
    assert plist.max_decree == 2
    held = plist.get(2)
    assert held is not None and held.ballot == 2


def test_the_same_mutation_twice_is_a_no_op_but_two_mutations_under_one_ballot_are_a_bug() -> None:
    plist = PrepareList(capacity=10)
    plist.prepare(mutation(1))
    assert not plist.prepare(mutation(1))
    with pytest.raises(ReplicaInvariantError, match="two different mutations"):
        plist.prepare(mutation(1, value="other"))


def _replace_with_older() -> None:
    plist = PrepareList(capacity=10)
    plist.prepare(mutation(1, ballot=3))
    plist.prepare(mutation(1, ballot=2))


def test_an_older_ballot_never_replaces_a_newer_entry() -> None:
    with pytest.raises(ReplicaInvariantError, match="newer ballot"):
        _replace_with_older()


def test_committed_entries_stay_as_a_cache_until_room_is_needed_uncommitted_ones_never_leave() -> None:
    plist = PrepareList(capacity=3)
    for decree in (1, 2, 3):
        plist.prepare(mutation(decree))
    assert not plist.has_room_for(4)  # three uncommitted: full
    plist.commit(2)
    assert plist.start_decree == 1  # d1..d2 kept for learners
    plist.prepare(mutation(4))
    assert (plist.start_decree, plist.max_decree, len(plist)) == (2, 4, 3)
    plist.prepare(mutation(5))
    assert plist.start_decree == 3
    assert not plist.has_room_for(6)
    with pytest.raises(ReplicaInvariantError, match="capacity"):
        plist.prepare(mutation(6))


def test_truncate_uncommitted_and_reset() -> None:
    plist = PrepareList(capacity=10)
    for decree in (1, 2, 3):
        plist.prepare(mutation(decree))
    plist.commit(1)
    assert [m.decree for m in plist.truncate_uncommitted()] == [2, 3]
    assert plist.max_decree == 1
    plist.reset(40)
    assert (plist.last_committed_decree, plist.max_decree, plist.start_decree, len(plist)) == (40, 40, 41, 0)
    plist.prepare(mutation(41))
    assert plist.max_decree == 41


def test_recovery_replays_the_log_in_append_order() -> None:
    # d2..d3 of ballot 1 were replaced by a new primary's d2 of ballot 2 before the crash.
    log = [mutation(1), mutation(2), mutation(3), mutation(2, ballot=2)]
    plist = PrepareList.recover(10, last_committed_decree=0, log=log).plist
    assert plist.max_decree == 2
    held = plist.get(2)
    assert held is not None and held.ballot == 2
    # The store already holds d1: only what follows is prepared.
    plist = PrepareList.recover(10, last_committed_decree=1, log=log).plist
    assert (plist.last_committed_decree, plist.start_decree, plist.max_decree) == (1, 2, 2)


def test_recovery_skips_records_that_do_not_continue_the_list() -> None:
    # A learner logged the held prepare d3 before it learned d1..d2, then appended d3 again once
    # it continued its list: the second record is what recovery keeps.
    log = [mutation(3, ballot=2), mutation(1), mutation(2), mutation(3, ballot=2)]
    assert PrepareList.recover(10, 0, log).plist.max_decree == 3
    # Without the second record d3 is not recovered: nothing was acknowledged as a member for it.
    assert PrepareList.recover(10, 0, log[:3]).plist.max_decree == 2


def test_recovery_commits_what_a_log_longer_than_the_prepare_list_proves_committed() -> None:
    # The store stands at d5 and the log holds d1..d30 of one primary: that primary held d30 only
    # with d20 committed (capacity 10), so d6..d20 are committed and the runtime must apply them.
    log = [mutation(decree) for decree in range(1, 31)]
    recovery = PrepareList.recover(10, last_committed_decree=5, log=log)
    assert [m.decree for m in recovery.committed] == list(range(6, 21))
    assert recovery.committed == log[5:20]
    plist = recovery.plist
    assert (plist.last_committed_decree, plist.max_decree) == (20, 30)
    assert [m.decree for m in plist.uncommitted()] == list(range(21, 31))


def test_recovery_beyond_capacity_follows_what_newer_primaries_replaced() -> None:
    # The store stands at d7. A new primary of ballot 2 replaced d8.. of ballot 1 before its log
    # went on to d25: the committed d8..d15 are ballot 2's mutations.
    log = [mutation(decree) for decree in range(1, 12)]
    log += [mutation(decree, ballot=2) for decree in range(8, 26)]
    recovery = PrepareList.recover(10, last_committed_decree=7, log=log)
    assert recovery.committed == log[11:19]
    assert [(m.decree, m.ballot) for m in recovery.committed] == [(d, 2) for d in range(8, 16)]
    assert (recovery.plist.last_committed_decree, recovery.plist.max_decree) == (15, 25)


def test_recovery_beyond_capacity_commits_entries_of_earlier_ballots_too() -> None:
    # d1 and d2 were prepared under ballots 1 and 2 (the group formed); ballot 3's primary held d15
    # only with d5 committed, and its mutations below are the ones this replica holds.
    log = [mutation(1), mutation(2, ballot=2)] + [mutation(decree, ballot=3) for decree in range(3, 16)]
    recovery = PrepareList.recover(10, last_committed_decree=0, log=log)
    assert recovery.committed == log[:5]
    assert (recovery.plist.last_committed_decree, recovery.plist.max_decree) == (5, 15)


def test_recovery_with_the_store_caught_up_commits_nothing_new() -> None:
    log = [mutation(decree) for decree in range(1, 31)]
    recovery = PrepareList.recover(10, last_committed_decree=30, log=log)
    assert recovery.committed == []
    assert (recovery.plist.last_committed_decree, recovery.plist.max_decree) == (30, 30)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["prepare", "replace", "commit", "truncate"]), st.integers(0, 5))))
def test_random_operations_keep_the_invariants(operations: list[tuple[str, int]]) -> None:
    """Against a model: a dict of decree -> ballot and a commit point."""
    plist = PrepareList(capacity=4)
    model: dict[int, int] = {}
    committed = 0
    ballot = 1
    for op, n in operations:
        top = max(model, default=committed)
        if op == "prepare" and plist.has_room_for(top + 1):
            plist.prepare(mutation(top + 1, ballot))
            model[top + 1] = ballot
        elif op == "replace" and top > committed:
            decree = committed + 1 + n % (top - committed)
            ballot += 1
            plist.prepare(mutation(decree, ballot))
            model = {d: b for d, b in model.items() if d < decree}
            model[decree] = ballot
        elif op == "commit" and top > committed:
            target = committed + 1 + n % (top - committed)
            assert [m.decree for m in plist.commit(target)] == list(range(committed + 1, target + 1))
            committed = target
        elif op == "truncate":
            plist.truncate_uncommitted()
            model = {d: b for d, b in model.items() if d <= committed}
        assert plist.last_committed_decree == committed
        assert plist.max_decree == max(model, default=committed)
        for decree in range(plist.start_decree, plist.max_decree + 1):
            held = plist.get(decree)
            assert held is not None and held.ballot == model[decree]
        assert plist.uncommitted_count <= plist.capacity


def test_a_re_branded_copy_replaces_the_ballot_only_and_keeps_what_follows() -> None:
    # A new primary re-prepares d2 under ballot 2. d3 may be committed already (the old primary
    # committed it with everyone's ack): it must stay until the new primary re-prepares it too.
    plist = PrepareList(capacity=10)
    for decree in (1, 2, 3):
        plist.prepare(mutation(decree, ballot=1, value=f"w{decree}"))
    assert plist.prepare(mutation(2, ballot=2, value="w2"))
    assert plist.max_decree == 3
    held = plist.get(2)
    assert held is not None and held.ballot == 2
    # A different mutation at d2 means the old d2 was never committed, nor anything after it.
    assert plist.prepare(mutation(2, ballot=3, value="other"))
    assert plist.max_decree == 2
