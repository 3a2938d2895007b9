"""A linearizability checker for per-key register histories (Wing & Gong, with Lowe's memoization).

A history is a list of client operations on keys: read, write, delete and check_and_set. Each
operation has an invoke time and, when the client got an answer, a complete time. An operation
whose outcome is unknown (the client timed out, the connection broke) has no complete time: it may
have taken effect at any moment after its invocation, or never.

The history is linearizable when there is a total order of the operations that (1) respects real
time: an operation that completed before another was invoked comes first, and (2) replays on a
sequential register to exactly the answers the clients saw. Linearizability is local (Herlihy &
Wing 1990, theorem 1): a history is linearizable iff its restriction to every key is, so every key
is checked on its own, which keeps the search small.

The search is Wing & Gong's (1993): walk the history's call and return events in time order, try to
linearize a call whose return has not been passed yet, backtrack when a return is reached whose call
could not be linearized. Lowe (2017, "Testing for linearizability") and porcupine add a cache of
(set of linearized operations, register state) pairs already explored, which turns the exponential
search into one that is usually linear for the histories real systems produce.

Unknown outcomes. An operation without a completion is given a return event after everything
else. Linearizing it after every completed operation is indistinguishable from it never having
happened (nothing observes the register afterwards), so "anywhere after its invocation, or never"
is exactly "linearized somewhere after its invocation". Its answer is never checked. A read with
an unknown outcome constrains nothing and is dropped.

Ties. Two events at the same time are treated as concurrent (calls sort before returns), so an
operation that completed at t is not ordered before one invoked at t. That can only accept more
histories, never reject a linearizable one.

The search is bounded by a step budget; a key whose search runs out of budget makes the result
UNKNOWN, never OK.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Hashable, Iterable, Sequence

from pegasus_kv.core.invariants import InvariantViolation, check_invariant

__all__ = [
    "DEFAULT_STEP_BUDGET",
    "CheckResult",
    "KeyResult",
    "OpKind",
    "Operation",
    "Verdict",
    "check_history",
    "check_key_history",
]

# Steps of the search (events visited) allowed per key before the answer is UNKNOWN. A step costs
# about a microsecond; the histories of the simulator need a few thousand.
DEFAULT_STEP_BUDGET = 2_000_000
# Shrinking a failing history to a minimal explanation re-runs the search once per candidate
# removal; it gets its own budget so a huge failing history still reports quickly.
DEFAULT_SHRINK_BUDGET = 2_000_000
# Bound on the number of operations in one key's history (the linearized set is a bitset).
MAX_OPERATIONS_PER_KEY = 100_000


class CheckerInvariantError(InvariantViolation):
    """Raised when the checker's own bookkeeping is inconsistent (survives python -O)."""


def _require(condition: bool, message: str) -> None:
    check_invariant(condition, message, CheckerInvariantError)


class OpKind(enum.Enum):
    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    CHECK_AND_SET = "check_and_set"


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key, as the client saw it.

    READ: `read_value` is what it returned (None: the key did not exist).
    WRITE: `value` is what it set.   DELETE: removes the key.
    CHECK_AND_SET: if the current value equals `expected` (None: the key does not exist), set it to
    `value`; `passed` says whether the check held.
    `complete` is None when the outcome is unknown; then `read_value` and `passed` are ignored.
    """

    key: Hashable
    kind: OpKind
    invoke: float
    complete: float | None
    value: Hashable | None = None
    expected: Hashable | None = None
    read_value: Hashable | None = None
    passed: bool | None = None
    client: Hashable = 0

    def __post_init__(self) -> None:
        if self.complete is not None and self.complete < self.invoke:
            raise ValueError(f"operation completes before it is invoked: {self}")
        if self.kind is OpKind.CHECK_AND_SET and self.complete is not None and self.passed is None:
            raise ValueError(f"a completed check_and_set needs its result (passed): {self}")

    @property
    def pending(self) -> bool:
        """True when the client never learned the outcome."""
        return self.complete is None

    @classmethod
    def read(
        cls,
        key: Hashable,
        invoke: float,
        complete: float | None,
        result: Hashable | None,
        client: Hashable = 0,
    ) -> Operation:
        return cls(key, OpKind.READ, invoke, complete, read_value=result, client=client)

    @classmethod
    def write(
        cls, key: Hashable, value: Hashable, invoke: float, complete: float | None, client: Hashable = 0
    ) -> Operation:
        return cls(key, OpKind.WRITE, invoke, complete, value=value, client=client)

    @classmethod
    def delete(cls, key: Hashable, invoke: float, complete: float | None, client: Hashable = 0) -> Operation:
        return cls(key, OpKind.DELETE, invoke, complete, client=client)

    @classmethod
    def check_and_set(
        cls,
        key: Hashable,
        expected: Hashable | None,
        value: Hashable,
        invoke: float,
        complete: float | None,
        passed: bool | None,
        client: Hashable = 0,
    ) -> Operation:
        return cls(
            key,
            OpKind.CHECK_AND_SET,
            invoke,
            complete,
            value=value,
            expected=expected,
            passed=passed,
            client=client,
        )

    def describe(self) -> str:
        end = "?" if self.complete is None else f"{self.complete}"
        if self.kind is OpKind.READ:
            what = f"read -> {self.read_value!r}" if not self.pending else "read -> ?"
        elif self.kind is OpKind.WRITE:
            what = f"write {self.value!r}"
        elif self.kind is OpKind.DELETE:
            what = "delete"
        else:
            outcome = "?" if self.pending else ("passed" if self.passed else "failed")
            what = f"check_and_set {self.expected!r} -> {self.value!r}: {outcome}"
        return f"[{self.invoke}, {end}] client {self.client!r}: {what}"


class Verdict(enum.Enum):
    OK = "ok"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"  # the step budget ran out before an answer


@dataclasses.dataclass(frozen=True, slots=True)
class KeyResult:
    key: Hashable
    verdict: Verdict
    steps: int
    # When NOT_LINEARIZABLE: a small sub-history of this key that is already not linearizable
    # (every operation in it is needed, as far as the shrink budget allowed finding out).
    operations: tuple[Operation, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    keys_checked: int
    steps: int
    # The first key found not linearizable (or out of budget), with its explanation.
    failure: KeyResult | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def explain(self) -> str:
        if self.failure is None:
            return f"{self.verdict.value}: {self.keys_checked} keys, {self.steps} search steps"
        lines = [f"{self.verdict.value}: key {self.failure.key!r}"]
        if self.failure.verdict is Verdict.UNKNOWN:
            lines.append(f"  search gave up after {self.failure.steps} steps")
        else:
            lines.append("  these operations admit no linearization:")
            lines.extend(f"    {op.describe()}" for op in sorted(self.failure.operations, key=_time_order))
        return "\n".join(lines)


def _time_order(op: Operation) -> tuple[float, int, float]:
    return (op.invoke, 0 if op.complete is not None else 1, op.complete if op.complete is not None else 0.0)


# --- the sequential register -------------------------------------------------------------------

_ABSENT: Hashable = None  # the state of a key that does not exist


def _step(state: Hashable, op: Operation) -> tuple[bool, Hashable]:
    """Apply `op` to the register state; returns (answer matches what the client saw, new state)."""
    if op.kind is OpKind.READ:
        return (op.pending or op.read_value == state, state)
    if op.kind is OpKind.WRITE:
        return (True, op.value)
    if op.kind is OpKind.DELETE:
        return (True, _ABSENT)
    check_holds = state == op.expected
    new_state = op.value if check_holds else state
    if op.pending:
        return (True, new_state)
    return (op.passed == check_holds, new_state)


# --- Wing & Gong search with memoization --------------------------------------------------------


class _Entry:
    """A call or return event in a doubly linked list that the search lifts entries out of."""

    __slots__ = ("id", "is_call", "match", "next", "op", "prev", "time")

    def __init__(self, op_id: int, op: Operation | None, is_call: bool, time: float) -> None:
        self.id = op_id
        self.op = op
        self.is_call = is_call
        self.time = time
        self.match: _Entry | None = None  # call -> its return
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _build_list(ops: Sequence[Operation]) -> _Entry:
    infinity = float("inf")
    events: list[tuple[float, int, int, _Entry]] = []
    for op_id, op in enumerate(ops):
        call = _Entry(op_id, op, True, op.invoke)
        ret = _Entry(op_id, None, False, infinity if op.complete is None else op.complete)
        call.match = ret
        # Calls before returns at equal times: events at the same instant are concurrent.
        events.append((call.time, 0, op_id, call))
        events.append((ret.time, 1, op_id, ret))
    events.sort(key=lambda event: event[:3])
    head = _Entry(-1, None, False, -infinity)
    previous = head
    for _, _, _, entry in events:
        previous.next = entry
        entry.prev = previous
        previous = entry
    return head


def _lift(call: _Entry) -> None:
    """Remove a call and its return from the list (they stay linked to their neighbours)."""
    ret = call.match
    _require(ret is not None and call.prev is not None, "lifting an unlinked call")
    assert ret is not None and call.prev is not None  # for the type checker
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    _require(ret.prev is not None, "a return is always preceded by its call")
    assert ret.prev is not None
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Entry) -> None:
    ret = call.match
    _require(ret is not None and ret.prev is not None and call.prev is not None, "unlifting an unlinked call")
    assert ret is not None and ret.prev is not None and call.prev is not None
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


def _search(ops: Sequence[Operation], budget: int) -> tuple[Verdict, int]:
    """Is this one key's history linearizable? Returns the verdict and the steps it took."""
    if not ops:
        return (Verdict.OK, 0)
    _require(len(ops) <= MAX_OPERATIONS_PER_KEY, f"{len(ops)} operations on one key is over the bound")
    # Once only operations with unknown outcomes remain, they can all be linearized at the end
    # (every one of them is accepted in any state), so the search is done.
    completed_left = sum(1 for op in ops if op.complete is not None)
    head = _build_list(ops)
    state: Hashable = _ABSENT
    linearized = 0
    seen: set[tuple[int, Hashable]] = set()
    stack: list[tuple[_Entry, Hashable]] = []
    steps = 0
    entry = head.next
    while completed_left > 0:
        steps += 1
        if steps > budget:
            return (Verdict.UNKNOWN, steps)
        _require(entry is not None, "the event list ended before every completed call was linearized")
        assert entry is not None
        if entry.is_call:
            op = entry.op
            assert op is not None
            matches, new_state = _step(state, op)
            if matches:
                new_linearized = linearized | (1 << entry.id)
                if (new_linearized, new_state) not in seen:
                    seen.add((new_linearized, new_state))
                    stack.append((entry, state))
                    state = new_state
                    linearized = new_linearized
                    if op.complete is not None:
                        completed_left -= 1
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return whose call is not linearized yet: every order tried so far is a dead end.
            if not stack:
                return (Verdict.NOT_LINEARIZABLE, steps)
            entry, state = stack.pop()
            linearized &= ~(1 << entry.id)
            assert entry.op is not None
            if entry.op.complete is not None:
                completed_left += 1
            _unlift(entry)
            entry = entry.next
    return (Verdict.OK, steps)


# --- pruning: operations with unknown outcomes that cannot matter --------------------------------


def _prune(ops: Sequence[Operation]) -> list[Operation]:
    """Drop operations with unknown outcomes whose effect nobody could have observed.

    - A read with an unknown outcome constrains nothing.
    - A check_and_set with an unknown outcome whose expected value no operation ever writes (and is
      not the initial absent state) can never pass: it is a no-op.
    - When no completed check_and_set failed, a write / delete / check_and_set with an unknown
      outcome whose resulting value no operation observes (no read returned it, no check_and_set
      expected it) can be moved to the end of any linearization, i.e. dropped: until the next
      write, only reads (which would have to return that value) and other unknown-outcome
      operations (which can themselves move to the end) could see it. A failed check observes
      inequality, which such a write could explain, so then nothing is dropped by this rule.
    """
    kept = [op for op in ops if not (op.pending and op.kind is OpKind.READ)]
    written: set[Hashable] = {_ABSENT}
    for op in kept:
        if op.kind in (OpKind.WRITE, OpKind.CHECK_AND_SET):
            written.add(op.value)
    kept = [
        op
        for op in kept
        if not (op.pending and op.kind is OpKind.CHECK_AND_SET and op.expected not in written)
    ]
    if any(op.kind is OpKind.CHECK_AND_SET and not op.pending and not op.passed for op in kept):
        return kept
    observed: set[Hashable] = set()
    for op in kept:
        if op.kind is OpKind.READ:
            observed.add(op.read_value)
        elif op.kind is OpKind.CHECK_AND_SET:
            observed.add(op.expected)

    def unobserved_effect(op: Operation) -> bool:
        if not op.pending:
            return False
        if op.kind is OpKind.DELETE:
            return _ABSENT not in observed
        return op.value not in observed

    return [op for op in kept if not unobserved_effect(op)]


# --- explanation: shrink a failing history -------------------------------------------------------


def _shrink(ops: list[Operation], budget: int) -> list[Operation]:
    """Remove operations one at a time while the rest stays not linearizable (1-minimal result).

    An operation that is the last writer of a value a remaining read or check observes is kept,
    so the explanation never turns "stale read" into "read of a value nobody wrote".
    """
    current = list(ops)
    spent = 0
    changed = True
    while changed and spent < budget:
        changed = False
        index = len(current) - 1
        while index >= 0 and spent < budget:
            candidate = current[:index] + current[index + 1 :]
            if _keeps_observed_writers(current, candidate):
                verdict, steps = _search(candidate, budget - spent)
                spent += steps
                if verdict is Verdict.NOT_LINEARIZABLE:
                    current = candidate
                    changed = True
            index -= 1
    return current


def _keeps_observed_writers(before: Sequence[Operation], after: Sequence[Operation]) -> bool:
    def writers(ops: Sequence[Operation]) -> set[Hashable]:
        return {op.value for op in ops if op.kind in (OpKind.WRITE, OpKind.CHECK_AND_SET)}

    def observed(ops: Sequence[Operation]) -> set[Hashable]:
        values: set[Hashable] = set()
        for op in ops:
            if op.kind is OpKind.READ and not op.pending:
                values.add(op.read_value)
            elif op.kind is OpKind.CHECK_AND_SET:
                values.add(op.expected)
        return values

    needed = observed(after)
    return (writers(before) & needed) <= writers(after)


# --- entry points -------------------------------------------------------------------------------


def check_key_history(
    key: Hashable,
    ops: Sequence[Operation],
    *,
    step_budget: int = DEFAULT_STEP_BUDGET,
    shrink_budget: int = DEFAULT_SHRINK_BUDGET,
) -> KeyResult:
    """Check the operations of one key (all must be on `key`)."""
    _require(step_budget > 0, "the step budget must be positive")
    for op in ops:
        if op.key != key:
            raise ValueError(f"operation on key {op.key!r} in the history of key {key!r}")
    pruned = _prune(ops)
    verdict, steps = _search(pruned, step_budget)
    if verdict is not Verdict.NOT_LINEARIZABLE:
        return KeyResult(key, verdict, steps)
    return KeyResult(key, verdict, steps, tuple(_shrink(pruned, shrink_budget)))


def check_history(
    ops: Iterable[Operation],
    *,
    step_budget: int = DEFAULT_STEP_BUDGET,
    shrink_budget: int = DEFAULT_SHRINK_BUDGET,
) -> CheckResult:
    """Check a whole history, key by key. OK only when every key is; any failing key wins over UNKNOWN."""
    by_key: dict[Hashable, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    total_steps = 0
    unknown: KeyResult | None = None
    for key, key_ops in by_key.items():
        result = check_key_history(key, key_ops, step_budget=step_budget, shrink_budget=shrink_budget)
        total_steps += result.steps
        if result.verdict is Verdict.NOT_LINEARIZABLE:
            return CheckResult(Verdict.NOT_LINEARIZABLE, len(by_key), total_steps, result)
        if result.verdict is Verdict.UNKNOWN and unknown is None:
            unknown = result
    if unknown is not None:
        return CheckResult(Verdict.UNKNOWN, len(by_key), total_steps, unknown)
    return CheckResult(Verdict.OK, len(by_key), total_steps)
