"""The simulated network: per-link delivery with loss, duplication, reordering, delay and partitions.

Every message travels as a real wire frame (core/codec.py: request id, kind, gpid, registered
message), encoded on send and decoded on arrival: no two nodes ever share a mutable object, and
everything the cores send is known to survive the real codec.
A message is judged twice: when sent (loss, duplication, delay) and when it would arrive (a link
cut in between, or a receiver that crashed meanwhile, drops it), like a TCP connection reset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from pegasus_kv.core.codec import Decoded, FrameKind, decode_payload, encode_payload
from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message
from tests.sim.scheduler import Scheduler, require

NodeName = str
Handler = Callable[[NodeName, Decoded], None]

# Messages in flight at once, over all links: a bound, like a socket buffer.
MAX_IN_FLIGHT = 20_000


@dataclasses.dataclass
class LinkFaults:
    """How the network misbehaves; probabilities are per message."""

    loss: float = 0.0
    duplicate: float = 0.0
    # A reordered message is held back an extra delay, so later messages overtake it.
    reorder: float = 0.0
    min_delay_ms: int = 1
    max_delay_ms: int = 4
    reorder_delay_ms: int = 30

    def __post_init__(self) -> None:
        require(0 <= self.loss < 1 and 0 <= self.duplicate < 1 and 0 <= self.reorder <= 1, "bad probability")
        require(0 <= self.min_delay_ms <= self.max_delay_ms, "bad delay range")


@dataclasses.dataclass
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    cut: int = 0  # dropped by a partition or a dead receiver


class Network:
    def __init__(self, scheduler: Scheduler, faults: LinkFaults | None = None) -> None:
        self.scheduler = scheduler
        self.faults = faults or LinkFaults()
        self.stats = NetworkStats()
        self._handlers: dict[NodeName, Handler] = {}
        # Directed links that are cut: (src, dst).
        self._cut: set[tuple[NodeName, NodeName]] = set()
        self._in_flight = 0

    # --- membership -----------------------------------------------------------------------------

    def attach(self, node: NodeName, handler: Handler) -> None:
        """`node` is up and receives messages through `handler`."""
        self._handlers[node] = handler

    def detach(self, node: NodeName) -> None:
        """`node` crashed: what is in flight to it is lost."""
        self._handlers.pop(node, None)

    def is_attached(self, node: NodeName) -> bool:
        return node in self._handlers

    # --- partitions -----------------------------------------------------------------------------

    def partition(self, side: Iterable[NodeName], rest: Iterable[NodeName]) -> None:
        """Cut every link between `side` and `rest`, both ways."""
        side_set, rest_set = set(side), set(rest)
        require(not side_set & rest_set, "a node cannot be on both sides of a partition")
        for a in side_set:
            for b in rest_set:
                self._cut.add((a, b))
                self._cut.add((b, a))

    def cut_one_way(self, src: NodeName, dst: NodeName) -> None:
        """An asymmetric fault: src's messages to dst are lost, dst's to src still arrive."""
        self._cut.add((src, dst))

    def heal(self) -> None:
        self._cut.clear()

    def is_cut(self, src: NodeName, dst: NodeName) -> bool:
        return (src, dst) in self._cut

    @property
    def partitioned(self) -> bool:
        return bool(self._cut)

    # --- delivery -------------------------------------------------------------------------------

    def send(
        self,
        src: NodeName,
        dst: NodeName,
        message: Message,
        *,
        request_id: int = 0,
        kind: FrameKind = FrameKind.ONEWAY,
        gpid: Gpid | None = None,
        may_duplicate: bool = True,
    ) -> None:
        """Send `message`; `may_duplicate` False for client requests, which ride on one TCP
        connection in the real system and so are never delivered twice."""
        self.stats.sent += 1
        rng = self.scheduler.rng
        faults = self.faults
        if (src, dst) in self._cut:
            self.stats.cut += 1
            return
        if faults.loss and rng.random() < faults.loss:
            self.stats.lost += 1
            return
        copies = 1
        if may_duplicate and faults.duplicate and rng.random() < faults.duplicate:
            copies = 2
            self.stats.duplicated += 1
        payload = encode_payload(message, request_id=request_id, kind=kind, gpid=gpid)
        label = f"{src}->{dst} {type(message).__name__}"
        for _ in range(copies):
            if self._in_flight >= MAX_IN_FLIGHT:
                self.stats.lost += 1
                continue
            delay_ms = rng.randint(faults.min_delay_ms, faults.max_delay_ms)
            if faults.reorder and rng.random() < faults.reorder:
                delay_ms += rng.randint(1, faults.reorder_delay_ms)
            self._in_flight += 1
            self.scheduler.after(delay_ms, label, lambda: self._arrive(src, dst, payload))

    def _arrive(self, src: NodeName, dst: NodeName, payload: bytes) -> None:
        self._in_flight -= 1
        handler = self._handlers.get(dst)
        if handler is None or (src, dst) in self._cut:
            self.stats.cut += 1
            return
        self.stats.delivered += 1
        handler(src, decode_payload(payload))
