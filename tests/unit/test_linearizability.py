"""The linearizability checker judges client histories; these stories pin down what it accepts.

Times are small integers; `None` as a completion means the client never learned the outcome.
"""

from __future__ import annotations

import dataclasses
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from pegasus_kv.testing.linearizability import (
    Operation,
    OpKind,
    Verdict,
    check_history,
    check_key_history,
)

K = b"k"
read = Operation.read
write = Operation.write
delete = Operation.delete
cas = Operation.check_and_set


def verdict_of(*ops: Operation) -> Verdict:
    return check_history(ops).verdict


# --- linearizable histories ------------------------------------------------------------------------


def test_an_empty_history_is_linearizable() -> None:
    result = check_history([])
    assert result.ok
    assert result.keys_checked == 0


def test_a_read_of_a_missing_key_sees_nothing() -> None:
    assert verdict_of(read(K, 0, 1, None)) is Verdict.OK


def test_sequential_writes_and_reads_are_linearizable() -> None:
    assert (
        verdict_of(
            write(K, b"a", 0, 1),
            read(K, 2, 3, b"a"),
            write(K, b"b", 4, 5),
            read(K, 6, 7, b"b"),
            delete(K, 8, 9),
            read(K, 10, 11, None),
        )
        is Verdict.OK
    )


def test_overlapping_writes_may_take_effect_in_either_order() -> None:
    # Both writes run over [0, 10]; one reader sees b then a, so b took effect first.
    assert (
        verdict_of(
            write(K, b"a", 0, 10, client=1),
            write(K, b"b", 1, 11, client=2),
            read(K, 2, 3, b"b", client=3),
            read(K, 4, 5, b"a", client=3),
        )
        is Verdict.OK
    )


def test_a_read_concurrent_with_a_write_may_see_the_old_or_the_new_value() -> None:
    for seen in (b"old", b"new"):
        assert (
            verdict_of(
                write(K, b"old", 0, 1),
                write(K, b"new", 2, 10, client=1),
                read(K, 3, 4, seen, client=2),
            )
            is Verdict.OK
        )


def test_events_at_the_same_instant_are_concurrent() -> None:
    # The write answers at 5 and the read is invoked at 5: neither is known to precede the other.
    assert verdict_of(write(K, b"a", 0, 1), write(K, b"b", 2, 5), read(K, 5, 6, b"a")) is Verdict.OK


def test_a_timed_out_write_that_took_effect_is_linearizable() -> None:
    assert (
        verdict_of(
            write(K, b"a", 0, 1),
            write(K, b"b", 2, None, client=1),  # the client timed out
            read(K, 10, 11, b"b", client=2),
        )
        is Verdict.OK
    )


def test_a_timed_out_write_that_never_took_effect_is_linearizable() -> None:
    assert (
        verdict_of(
            write(K, b"a", 0, 1),
            write(K, b"b", 2, None, client=1),
            read(K, 10, 11, b"a", client=2),
            read(K, 20, 21, b"a", client=2),
        )
        is Verdict.OK
    )


def test_a_timed_out_write_may_take_effect_long_after_its_invocation() -> None:
    assert (
        verdict_of(
            write(K, b"b", 0, None, client=1),
            read(K, 10, 11, None, client=2),
            read(K, 20, 21, None, client=2),
            read(K, 30, 31, b"b", client=2),
        )
        is Verdict.OK
    )


def test_a_check_and_set_passes_only_on_the_expected_value() -> None:
    assert (
        verdict_of(
            cas(K, None, b"a", 0, 1, passed=True),  # creates the key
            cas(K, None, b"x", 2, 3, passed=False),  # the key exists now
            cas(K, b"a", b"b", 4, 5, passed=True),
            read(K, 6, 7, b"b"),
        )
        is Verdict.OK
    )


def test_a_timed_out_check_and_set_may_have_passed() -> None:
    assert (
        verdict_of(
            write(K, b"a", 0, 1),
            cas(K, b"a", b"b", 2, None, passed=None, client=1),
            read(K, 5, 6, b"b", client=2),
        )
        is Verdict.OK
    )


def test_keys_are_independent_registers() -> None:
    result = check_history(
        [write(b"x", b"1", 0, 1), write(b"y", b"2", 0, 1), read(b"x", 2, 3, b"1"), read(b"y", 2, 3, b"2")]
    )
    assert result.ok
    assert result.keys_checked == 2


# --- non-linearizable histories -----------------------------------------------------------------


def test_a_stale_read_after_a_completed_write_is_caught() -> None:
    result = check_history([write(K, b"a", 0, 1), write(K, b"b", 2, 3), read(K, 4, 5, b"a")])
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert not result.ok


def test_a_read_of_a_value_never_written_is_caught() -> None:
    assert verdict_of(write(K, b"a", 0, 1), read(K, 2, 3, b"z")) is Verdict.NOT_LINEARIZABLE


def test_a_read_cannot_see_a_write_before_the_write_was_invoked() -> None:
    assert verdict_of(read(K, 0, 1, b"b"), write(K, b"b", 2, None)) is Verdict.NOT_LINEARIZABLE


def test_a_timed_out_write_cannot_be_undone_once_seen() -> None:
    assert (
        verdict_of(
            write(K, b"a", 0, 1),
            write(K, b"b", 2, None, client=1),
            read(K, 10, 11, b"b", client=2),
            read(K, 20, 21, b"a", client=2),
        )
        is Verdict.NOT_LINEARIZABLE
    )


def test_a_deleted_value_cannot_come_back() -> None:
    assert verdict_of(write(K, b"a", 0, 1), delete(K, 2, 3), read(K, 4, 5, b"a")) is Verdict.NOT_LINEARIZABLE


def test_two_readers_observing_writes_in_contradictory_orders_are_caught() -> None:
    # Both writes overlap everything, but reader 1 sees a then b while reader 2 sees b then a.
    assert (
        verdict_of(
            write(K, b"a", 0, 10, client=1),
            write(K, b"b", 0, 10, client=2),
            read(K, 1, 2, b"a", client=3),
            read(K, 1, 2, b"b", client=4),
            read(K, 3, 4, b"b", client=3),
            read(K, 3, 4, b"a", client=4),
        )
        is Verdict.NOT_LINEARIZABLE
    )


def test_a_check_and_set_that_passed_when_it_could_not_have_is_caught() -> None:
    assert verdict_of(write(K, b"a", 0, 1), cas(K, b"b", b"c", 2, 3, passed=True)) is Verdict.NOT_LINEARIZABLE


def test_a_check_and_set_that_failed_when_it_must_have_passed_is_caught() -> None:
    assert (
        verdict_of(write(K, b"a", 0, 1), cas(K, b"a", b"c", 2, 3, passed=False)) is Verdict.NOT_LINEARIZABLE
    )


def test_two_check_and_sets_on_the_same_expected_value_cannot_both_pass() -> None:
    assert (
        verdict_of(
            write(K, b"a", 0, 1),
            cas(K, b"a", b"b", 2, 10, passed=True, client=1),
            cas(K, b"a", b"c", 2, 10, passed=True, client=2),
        )
        is Verdict.NOT_LINEARIZABLE
    )


# --- explanations and limits ------------------------------------------------------------------------


def test_a_failure_names_the_key_and_only_the_operations_involved() -> None:
    history = [
        write(b"other", b"1", 0, 1),
        read(b"other", 2, 3, b"1"),
        read(K, 0, 1, None),
        write(K, b"a", 2, 3),
        read(K, 4, 5, b"a"),
        write(K, b"b", 6, 7),
        read(K, 8, 9, b"b"),
        read(K, 10, 11, b"a"),  # stale
        read(K, 12, 13, b"a"),  # stale too, but one stale read is explanation enough
    ]
    result = check_history(history)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.failure is not None
    assert result.failure.key == K
    involved = set(result.failure.operations)
    # Kept: the write of a (observed by the stale read), the write of b, one stale read.
    assert write(K, b"a", 2, 3) in involved
    assert write(K, b"b", 6, 7) in involved
    assert len(involved) == 3
    assert "b'a'" in result.explain() and "admit no linearization" in result.explain()


def test_running_out_of_budget_is_unknown_never_ok() -> None:
    # Ten overlapping writes and reads: more than one step of search.
    history = [write(K, bytes([i]), 0, 100, client=i) for i in range(10)]
    history += [read(K, 1, 99, bytes([i]), client=10 + i) for i in range(10)]
    tight = check_history(history, step_budget=5)
    assert tight.verdict is Verdict.UNKNOWN
    assert not tight.ok
    assert check_history(history).ok


def test_a_failure_on_one_key_wins_over_an_unknown_on_another() -> None:
    crowded = [write(b"crowded", bytes([i]), 0, 100, client=i) for i in range(8)]
    crowded += [read(b"crowded", 1, 99, bytes([i]), client=10 + i) for i in range(8)]
    broken = [write(K, b"a", 0, 1), read(K, 2, 3, b"z")]
    assert check_history(crowded, step_budget=20).verdict is Verdict.UNKNOWN
    assert check_history(crowded + broken, step_budget=20).verdict is Verdict.NOT_LINEARIZABLE


def test_a_key_history_must_hold_only_that_key() -> None:
    try:
        check_key_history(K, [read(b"other", 0, 1, None)])
    except ValueError as error:
        assert "other" in str(error)
    else:
        raise AssertionError("a foreign key was accepted")


# --- properties -------------------------------------------------------------------------------------

KEYS = (b"k0", b"k1", b"k2")


@st.composite
def sequential_histories(draw: st.DrawFn) -> list[Operation]:
    """Run a sequential register, then blur each operation's real-time interval around its
    linearization point (and lose some outcomes): the result is linearizable by construction."""
    count = draw(st.integers(min_value=1, max_value=40))
    state: dict[bytes, bytes | None] = {}
    written: list[bytes] = []
    ops: list[Operation] = []
    for index in range(count):
        point = index * 10
        key = draw(st.sampled_from(KEYS))
        kind = draw(st.sampled_from(list(OpKind)))
        invoke = point - draw(st.integers(min_value=0, max_value=45))
        complete: int | None = point + draw(st.integers(min_value=0, max_value=45))
        timed_out = kind is not OpKind.READ and draw(st.integers(min_value=0, max_value=5)) == 0
        took_effect = not timed_out or draw(st.booleans())
        current = state.get(key)
        if timed_out:
            complete = None
        if kind is OpKind.READ:
            ops.append(read(key, invoke, complete, current, client=index))
        elif kind is OpKind.WRITE:
            value = f"v{index}".encode()
            written.append(value)
            if took_effect:
                state[key] = value
            ops.append(write(key, value, invoke, complete, client=index))
        elif kind is OpKind.DELETE:
            if took_effect:
                state[key] = None
            ops.append(delete(key, invoke, complete, client=index))
        else:
            expected = draw(st.sampled_from([None, current, *written[-3:]]))
            value = f"v{index}".encode()
            written.append(value)
            passed = current == expected
            if took_effect and passed:
                state[key] = value
            ops.append(
                cas(key, expected, value, invoke, complete, None if timed_out else passed, client=index)
            )
    return ops


@settings(max_examples=300, deadline=None)
@given(sequential_histories())
def test_histories_of_a_sequential_register_are_linearizable(history: list[Operation]) -> None:
    result = check_history(history)
    assert result.verdict is Verdict.OK, result.explain()


@settings(max_examples=300, deadline=None)
@given(sequential_histories(), st.data())
def test_a_read_of_a_value_never_written_is_always_caught(
    history: list[Operation], data: st.DataObject
) -> None:
    completed_reads = [i for i, op in enumerate(history) if op.kind is OpKind.READ and not op.pending]
    if not completed_reads:
        history = [*history, read(b"k0", 10_000, 10_001, None)]
        completed_reads = [len(history) - 1]
    index = data.draw(st.sampled_from(completed_reads))
    mutated = dataclasses.replace(history[index], read_value=b"never written")
    history = [*history[:index], mutated, *history[index + 1 :]]
    result = check_history(history)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.failure is not None
    assert mutated in result.failure.operations


def brute_force_linearizable(history: list[Operation]) -> bool:
    """The definition, literally: some subset of the unknown outcomes plus every completed operation,
    in some order that respects real time, replays on a register to the answers seen."""
    completed = [op for op in history if not op.pending]
    pending = [op for op in history if op.pending and op.kind is not OpKind.READ]
    for mask in range(1 << len(pending)):
        chosen = completed + [op for i, op in enumerate(pending) if mask >> i & 1]
        for order in itertools.permutations(chosen):
            if respects_real_time(order) and replays(order):
                return True
    return False


def respects_real_time(order: tuple[Operation, ...]) -> bool:
    for i, later in enumerate(order):
        for earlier in order[i + 1 :]:
            if earlier.complete is not None and earlier.complete < later.invoke:
                return False
    return True


def replays(order: tuple[Operation, ...]) -> bool:
    state: dict[object, object] = {}
    for op in order:
        current = state.get(op.key)
        if op.kind is OpKind.READ:
            if op.read_value != current:
                return False
        elif op.kind is OpKind.WRITE:
            state[op.key] = op.value
        elif op.kind is OpKind.DELETE:
            state[op.key] = None
        else:
            holds = current == op.expected
            if not op.pending and op.passed != holds:
                return False
            if holds:
                state[op.key] = op.value
    return True


@st.composite
def arbitrary_small_histories(draw: st.DrawFn) -> list[Operation]:
    """Any few operations on two keys and three values, most of them nonsense."""
    values = st.sampled_from([None, b"a", b"b", b"c"])
    ops: list[Operation] = []
    for client in range(draw(st.integers(min_value=1, max_value=6))):
        key = draw(st.sampled_from([b"x", b"y"]))
        kind = draw(st.sampled_from(list(OpKind)))
        invoke = draw(st.integers(min_value=0, max_value=10))
        complete = None if draw(st.integers(0, 3)) == 0 else invoke + draw(st.integers(0, 10))
        if kind is OpKind.READ:
            ops.append(read(key, invoke, complete, draw(values), client=client))
        elif kind is OpKind.WRITE:
            ops.append(write(key, draw(values.filter(bool)), invoke, complete, client=client))
        elif kind is OpKind.DELETE:
            ops.append(delete(key, invoke, complete, client=client))
        else:
            passed = None if complete is None else draw(st.booleans())
            ops.append(
                cas(key, draw(values), draw(values.filter(bool)), invoke, complete, passed, client=client)
            )
    return ops


@settings(max_examples=500, deadline=None)
@given(arbitrary_small_histories())
def test_the_checker_agrees_with_the_definition_on_small_histories(history: list[Operation]) -> None:
    expected = Verdict.OK if brute_force_linearizable(history) else Verdict.NOT_LINEARIZABLE
    assert check_history(history).verdict is expected
