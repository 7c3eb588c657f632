# mypy: disable-error-code="misc"
# (misc: mypy wants a self-type to be a supertype of the class; a mixin used only by
# ClusterNode takes ``self: ClusterNode`` so that its methods are checked against it.)
"""Serving peers: ``ClusterNode._serve`` is the transport's ``Handler``; it answers a peer's
request from this node's replica, its anti-entropy trees, gossip, and acknowledges writes
only after they were committed.

Rules (numbered across ClusterNode's modules; cluster_node.py says where each lives):
2. A replica acknowledges a peer's WRITE (COND_WRITE, FLUSH) only after its commit log reached the
   OS, as a client's write is acknowledged (group commit): an ack is never weaker than the
   appendfsync policy says. The acks of a commit round are written in the commit's own loop
   turn (``DeferredReply``, ``flush_replies``), not one or two turns later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cluster.anti_entropy_messages import AntiEntropyError, Fetch, Hashes, Keys, Summary
from cluster.messages import (
    CondWrite,
    Count,
    CountReply,
    ErrorCode,
    Flush,
    FlushAck,
    GossipAck2,
    GossipSyn,
    Message,
    Read,
    Scan,
    ScanReply,
    Stream,
    Write,
)
from cluster.sibling_codec import encode
from cluster.stream_source import serve_stream
from cluster.transport import DeferredReply, RemoteError

if TYPE_CHECKING:
    from cluster.cluster_node import ClusterNode

AE_REQUESTS = (Summary, Hashes, Keys, Fetch)


class PeerHandler:
    """Answers peers' requests (Rule 2).

    A mixin of ``ClusterNode`` (its methods take ``self: ClusterNode``): it holds no state
    of its own.
    """

    # Declared here for mypy, which cannot infer it through the import cycle with
    # cluster_node.py; ClusterNode.__init__ creates it (Rule 2: replies waiting for a commit).
    _commit_waiters: dict[Message, DeferredReply]

    def _serve(self: ClusterNode, peer: str, message: Message) -> Message | DeferredReply:
        """The transport's handler: answers a peer's request (maybe after commit, Rule 2)."""
        if isinstance(message, (GossipSyn, GossipAck2)):
            self.transport.retry_now(peer)  # it reached us: our link to it may reconnect now
            return self.gossip.serve(peer, message)
        if self._closed:
            raise RemoteError(ErrorCode.SHUTTING_DOWN, "node is stopping")
        if isinstance(message, Read):
            return self.service.handle(peer, message)
        if isinstance(message, (Write, CondWrite)):
            return self._after_commit(self.service.handle(peer, message))
        if isinstance(message, Scan):
            self._check_db(message.db)
            entries, stop = self.node.local_scan(message.db, message.start, message.count)
            return ScanReply([[key, encode(siblings)] for key, siblings in entries], stop)
        if isinstance(message, Stream):
            return serve_stream(self.node, message)
        if isinstance(message, AE_REQUESTS):
            try:
                return self.ae_server.serve(message)
            except AntiEntropyError as exc:
                raise RemoteError(ErrorCode.PROTOCOL, f"anti-entropy: {exc}") from None
        if isinstance(message, Count):
            self._check_db(message.db)
            return CountReply(self.node.replica.keys[message.db])
        if isinstance(message, Flush):
            if message.db is not None:
                self._check_db(message.db)
            self._flush_local(message.db)
            return self._after_commit(FlushAck())
        return self.service.handle(peer, message)  # answers UNSUPPORTED

    def _check_db(self: ClusterNode, db: int) -> None:
        if db >= self.node.options.databases:
            raise RemoteError(ErrorCode.UNSUPPORTED, f"db {db} is out of range")

    def _after_commit(self: ClusterNode, reply: Message) -> Message | DeferredReply:
        """``reply`` once the pending log is committed (Rule 2). The requests of one commit
        round that answer the same reply (every WRITE answers WriteAck) share one
        ``DeferredReply``."""
        if not self.node.pending_log:
            return reply
        answers = self._commit_waiters
        answer = answers.get(reply)
        if answer is None:
            answer = answers[reply] = DeferredReply()
        if not self._commit_scheduled:
            self._commit_scheduled = True
            self._loop.call_soon(self._commit)
        return answer

    def _commit(self: ClusterNode) -> None:
        self._commit_scheduled = False
        waiters, self._commit_waiters = self._commit_waiters, {}
        error: Exception | None = None
        try:
            if not self._closed:
                self.node.commit()
        except Exception as exc:  # OSError (disk full ...): the writes are not acknowledged
            error = exc
        for reply, answer in waiters.items():
            answer.settle(reply if error is None
                          else RemoteError(ErrorCode.INTERNAL, f"commit failed: {error}"))
        # The acks go out now (the commit is the round's end), not with the next turn's
        # batch: before that turn the loop reads and serves whatever arrived meanwhile.
        self.transport.flush_replies()
