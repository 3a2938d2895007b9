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
    plist = PrepareList.recover(10, last_committed_decree=0, log=log)
    assert plist.max_decree == 2
    held = plist.get(2)
    assert held is not None and held.ballot == 2
    # The store already holds d1: only what follows is prepared.
    plist = PrepareList.recover(10, last_committed_decree=1, log=log)
    assert (plist.last_committed_decree, plist.start_decree, plist.max_decree) == (1, 2, 2)


def test_recovery_skips_records_that_do_not_continue_the_list() -> None:
    # A learner logged the held prepare d3 before it learned d1..d2, then appended d3 again once
    # it continued its list: the second record is what recovery keeps.
    log = [mutation(3, ballot=2), mutation(1), mutation(2), mutation(3, ballot=2)]
    assert PrepareList.recover(10, 0, log).max_decree == 3
    # Without the second record d3 is not recovered: nothing was acknowledged as a member for it.
    assert PrepareList.recover(10, 0, log[:3]).max_decree == 2


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
