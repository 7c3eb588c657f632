"""An in-memory network for the simulation: seeded delay, loss, duplication, reordering,
partitions and crashes, replayable from one seed.

Theory of operation. Each node joins with ``attach(node, handler)`` and gets a ``SimTransport``
(the node's view of the network: ``send`` and ``request``). A message becomes a ``Packet`` on
the directed link ``(src, dst)``; each link is a priority queue ordered by ``(deliver_at,
seq)`` (TigerBeetle's packet simulator), and one clock event per packet delivers the head of
its link when due. On delivery a request runs the destination's handler, whose return value
travels back as the reply, over the reverse link and through the same faults. A request
whose reply does not arrive in ``timeout_s`` completes with ``PeerTimeout``.

Faults (``NetworkOptions``; every random choice comes from the one ``random.Random``):
- delay: uniform in ``[delay_ticks_min, delay_ticks_max]`` per packet;
- drop / duplicate: per packet, with the given probabilities (a duplicate has its own delay);
- reorder: off means each link is FIFO (a packet is never delivered before one sent earlier
  on the same link); on means packets overtake each other freely;
- partition: a set of cut directed links (``cut``, ``partition``, ``isolate``; ``heal``). A
  packet on a cut link is dropped, whether it was cut when sent or while in flight;
- crash / restart: a crashed node receives nothing, its pending requests never complete, and
  packets it sent before crashing may still arrive (they were on the wire). ``restart``
  attaches a new incarnation with a fresh handler; replies meant for the old one are dropped.

Invariants:
1. Determinism: the same seed, options and calls give the same ``trace`` event for event.
2. A request completes at most once: with the first reply, or a timeout (duplicated or late
   replies are dropped, and traced as such).
3. With ``reorder`` off, deliveries on each link are in send order (duplicates included).
4. Nothing crosses a cut link and nothing reaches a crashed node.
5. Observers (``on_message``) see every send, delivery and drop, after the fact; they must
   not send (they are checkers, not participants).

``SimTransport`` implements ``cluster.transport.Transport`` as ``PeerTransport`` does over TCP:
``request(peer, message, timeout_s)`` returns an ``asyncio.Future`` (bound to a ``SimLoop``, so
it completes in virtual time with no event loop running) that completes exactly once: with
the reply; ``RemoteError`` when the peer answered ERROR (a handler raised ``RemoteError``);
``PeerTimeout`` when no reply came in time (lost, cut, crashed or slow); ``PeerUnavailable``
for a peer never attached. Differences from TCP, on purpose: a crashed peer shows as a
timeout (no connection-reset signal), and a handler exception other than ``RemoteError``
propagates and fails the simulation (a bug, not an ERROR INTERNAL reply). Handlers must
answer synchronously (the node's replica calls do). ``send`` (one-way, no reply) is an
extra that gossip may use.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from cluster.messages import Error, Message
from cluster.transport import Handler, PeerTimeout, PeerUnavailable, RemoteError
from tests.sim.sim_clock import SimClock, SimLoop

OnReply = Callable[[Message | None], None]  # the reply, or None on timeout
Event = Literal["send", "deliver", "drop"]


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    delay_ticks_min: int = 1
    delay_ticks_max: int = 10
    drop_probability: float = 0.0
    duplicate_probability: float = 0.0
    reorder: bool = False

    def __post_init__(self) -> None:
        assert 0 <= self.delay_ticks_min <= self.delay_ticks_max, self
        assert 0.0 <= self.drop_probability <= 1.0, self
        assert 0.0 <= self.duplicate_probability <= 1.0, self

    @classmethod
    def swarm(cls, rng: random.Random) -> NetworkOptions:
        """Options drawn from ``rng`` (swarm testing: every run a different fault mix)."""
        low = rng.randint(0, 5)
        return cls(delay_ticks_min=low, delay_ticks_max=low + rng.randint(0, 50),
                   drop_probability=rng.choice((0.0, 0.01, 0.05, 0.2)),
                   duplicate_probability=rng.choice((0.0, 0.01, 0.1)),
                   reorder=rng.random() < 0.5)


@dataclass(frozen=True, slots=True)
class Packet:
    src: str
    dst: str
    message: Message
    request_id: int  # 0: one-way
    is_reply: bool
    src_incarnation: int  # the sender's incarnation (replies go to this one only)


@dataclass(frozen=True, slots=True)
class TraceEvent:
    tick: int
    event: Event
    packet: Packet
    reason: str = ""  # why a packet was dropped


@dataclass(order=True)
class _Queued:
    deliver_at: int
    seq: int
    packet: Packet = field(compare=False)


@dataclass
class _Pending:
    on_reply: OnReply
    requester: str
    incarnation: int


class SimNetwork:
    def __init__(self, clock: SimClock, rng: random.Random,
                 options: NetworkOptions | None = None) -> None:
        self.clock = clock
        self.rng = rng
        self.options = options or NetworkOptions()
        self.loop = SimLoop(clock)
        self.trace: list[TraceEvent] = []
        self.cut_links: set[tuple[str, str]] = set()
        self._handlers: dict[str, Handler] = {}
        self._incarnation: dict[str, int] = {}
        self._up: set[str] = set()
        self._links: dict[tuple[str, str], list[_Queued]] = {}
        self._link_last: dict[tuple[str, str], int] = {}
        self._pending: dict[int, _Pending] = {}
        self._observers: list[Callable[[TraceEvent], None]] = []
        self._seq = 0
        self._request_id = 0

    # Membership of the simulated world ---------------------------------------------------

    def attach(self, node: str, handler: Handler) -> SimTransport:
        """Add a node (first incarnation) and return its transport."""
        assert node not in self._handlers, f"{node} already attached"
        self._incarnation[node] = 0
        return self._start(node, handler)

    def crash(self, node: str) -> None:
        """The node stops: it receives nothing and its pending requests never complete."""
        assert node in self._up, f"{node} is not up"
        self._up.discard(node)
        for request_id in [rid for rid, p in self._pending.items() if p.requester == node]:
            del self._pending[request_id]  # in sorted-by-insertion order: deterministic

    def restart(self, node: str, handler: Handler) -> SimTransport:
        """A new incarnation of a crashed node, with the handler of its new process."""
        assert node in self._handlers and node not in self._up, f"{node} is not crashed"
        self._incarnation[node] += 1
        return self._start(node, handler)

    def is_up(self, node: str) -> bool:
        return node in self._up

    def _start(self, node: str, handler: Handler) -> SimTransport:
        self._handlers[node] = handler
        self._up.add(node)
        return SimTransport(self, node, self._incarnation[node])

    # Partitions --------------------------------------------------------------------------

    def cut(self, src: str, dst: str) -> None:
        """Cut the directed link src -> dst (asymmetric partitions are cuts one way)."""
        self.cut_links.add((src, dst))

    def partition(self, side_a: set[str], side_b: set[str]) -> None:
        """Cut every link between the two sides, both ways."""
        for a in sorted(side_a):
            for b in sorted(side_b):
                self.cut_links.add((a, b))
                self.cut_links.add((b, a))

    def isolate(self, node: str) -> None:
        self.partition({node}, set(self._handlers) - {node})

    def heal(self) -> None:
        self.cut_links.clear()

    # Observation -------------------------------------------------------------------------

    def on_message(self, observer: Callable[[TraceEvent], None]) -> None:
        """Call ``observer(event)`` for every send, delivery and drop (invariant 5)."""
        self._observers.append(observer)

    def in_flight(self) -> int:
        return sum(len(queue) for queue in self._links.values())

    def _record(self, event: Event, packet: Packet, reason: str = "") -> None:
        entry = TraceEvent(self.clock.now, event, packet, reason)
        self.trace.append(entry)
        for observer in self._observers:
            observer(entry)

    # Sending and delivering --------------------------------------------------------------

    def _send(self, src: str, incarnation: int, dst: str, message: Message, request_id: int,
              is_reply: bool) -> None:
        assert dst in self._handlers, f"unknown node {dst}"
        packet = Packet(src, dst, message, request_id, is_reply, incarnation)
        self._record("send", packet)
        options = self.options
        if self.rng.random() < options.drop_probability:
            self._record("drop", packet, "loss")
            return
        copies = 2 if self.rng.random() < options.duplicate_probability else 1
        for _ in range(copies):
            self._enqueue(packet)

    def _enqueue(self, packet: Packet) -> None:
        options = self.options
        link = (packet.src, packet.dst)
        delay = self.rng.randint(options.delay_ticks_min, options.delay_ticks_max)
        deliver_at = self.clock.now + delay
        if not options.reorder:
            deliver_at = max(deliver_at, self._link_last.get(link, 0))  # invariant 3
            self._link_last[link] = deliver_at
        self._seq += 1
        heapq.heappush(self._links.setdefault(link, []), _Queued(deliver_at, self._seq, packet))
        self.clock.call_in(deliver_at - self.clock.now, lambda: self._deliver_head(link))

    def _deliver_head(self, link: tuple[str, str]) -> None:
        queue = self._links[link]
        assert queue and queue[0].deliver_at <= self.clock.now, link
        packet = heapq.heappop(queue).packet
        if link in self.cut_links:
            self._record("drop", packet, "partition")
            return
        if packet.dst not in self._up:
            self._record("drop", packet, "crashed")
            return
        if packet.is_reply:
            self._deliver_reply(packet)
            return
        self._record("deliver", packet)
        try:
            reply = self._handlers[packet.dst](packet.src, packet.message)
        except RemoteError as exc:
            reply = Error(int(exc.code), exc.text)
        if packet.request_id:  # a one-way message's "reply" is ignored
            assert isinstance(reply, Message), f"handlers answer synchronously: {reply!r}"
            self._send(packet.dst, self._incarnation[packet.dst], packet.src, reply,
                       packet.request_id, True)

    def _deliver_reply(self, packet: Packet) -> None:
        pending = self._pending.get(packet.request_id)
        if pending is None or pending.incarnation != self._incarnation[packet.dst]:
            self._record("drop", packet, "no request waits")  # late, duplicate, or orphaned
            return
        self._record("deliver", packet)
        del self._pending[packet.request_id]
        pending.on_reply(packet.message)

    def _request(self, src: str, incarnation: int, dst: str, message: Message,
                 timeout_s: float, on_reply: OnReply) -> None:
        self._request_id += 1
        request_id = self._request_id
        self._pending[request_id] = _Pending(on_reply, src, incarnation)
        self.clock.call_later(timeout_s, lambda: self._time_out(request_id))
        self._send(src, incarnation, dst, message, request_id, False)

    def _time_out(self, request_id: int) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            pending.on_reply(None)


def call_through_request(request: Callable[[str, Message, float], asyncio.Future[Message]],
                         peer: str, message: Message, timeout_s: float,
                         on_done: Callable[[str, Message | BaseException], None]) -> None:
    """``Transport.call`` of a simulated transport: ``request``'s outcome handed to
    ``on_done`` (never at once: a future's callbacks run in a later loop turn)."""

    def relay(done: asyncio.Future[Message]) -> None:
        error = done.exception()
        on_done(peer, error if error is not None else done.result())

    request(peer, message, timeout_s).add_done_callback(relay)


class SimTransport:
    """One node incarnation's ``Transport``; unusable once that incarnation crashed."""

    def __init__(self, network: SimNetwork, node_id: str, incarnation: int) -> None:
        self.network = network
        self._node_id = node_id
        self.incarnation = incarnation

    @property
    def node_id(self) -> str:
        return self._node_id

    def _alive(self) -> bool:
        network = self.network
        return (self.node_id in network._up
                and network._incarnation[self.node_id] == self.incarnation)

    def send(self, peer: str, message: Message) -> None:
        if self._alive():
            self.network._send(self.node_id, self.incarnation, peer, message, 0, False)

    def call(self, peer: str, message: Message, timeout_s: float,
             on_done: Callable[[str, Message | BaseException], None]) -> None:
        call_through_request(self.request, peer, message, timeout_s, on_done)

    def request(self, peer: str, message: Message, timeout_s: float) -> asyncio.Future[Message]:
        """See the module docstring (and ``cluster.transport`` Rule 1)."""
        assert timeout_s > 0, timeout_s
        network = self.network
        future: asyncio.Future[Message] = network.loop.create_future()
        if peer not in network._handlers:
            future.set_exception(PeerUnavailable(f"peer {peer}: unknown peer"))
            return future
        if not self._alive():
            return future  # a dead process's request never completes

        def on_reply(reply: Message | None) -> None:
            if reply is None:
                future.set_exception(PeerTimeout(f"peer {peer}: no reply in {timeout_s} s"))
            elif isinstance(reply, Error):
                future.set_exception(RemoteError(reply.code, reply.text))
            else:
                future.set_result(reply)

        network._request(self.node_id, self.incarnation, peer, message, timeout_s, on_reply)
        return future
