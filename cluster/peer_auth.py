"""The peer handshake: version negotiation and mutual HMAC-SHA256 challenge-response on a
shared ``cluster-secret``. Sans-IO: messages in, messages out; no sockets, no timers.

Theory of operation. Both sides run the same ``Handshake``, differing only in ``Role``
(whoever opened the TCP connection is the INITIATOR). Each side's first flight is
``HELLO`` (versions it speaks, node id, cluster name) and ``AUTH_CHALLENGE`` (a fresh random
nonce). On the peer's HELLO a side picks the version (the highest both speak) and checks the
cluster name; on the peer's challenge it answers ``AUTH_RESPONSE`` with
``proof = HMAC-SHA256(secret, role || transcript)``, where the transcript binds the cluster
name, the version, both node ids and both nonces; on the peer's response it verifies the
peer's proof (constant-time) and sends ``AUTH_OK``; on the peer's AUTH_OK the link is up.

Invariants:
1. A side is DONE only after it verified the peer's proof *and* the peer verified its own
   (the peer's AUTH_OK): a connection is authenticated in both directions or not at all.
2. Proofs are bound to the role and to both nonces, so a proof cannot be replayed on another
   connection or reflected back at its maker (a peer that echoes our nonce is refused).
3. Frames arrive in one order only (HELLO, AUTH_CHALLENGE, AUTH_RESPONSE, AUTH_OK); anything
   else is refused, by the transition table below (Rule 1 of h11: every transition lives here).
4. Nonces come from the injected ``random.Random``; production must inject
   ``random.SystemRandom()`` (os.urandom), tests a seeded one.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import random
from typing import NoReturn

import msgpack

from cluster.errors import ClusterError
from cluster.messages import (
    NONCE_BYTES,
    PROTOCOL_VERSION,
    AuthChallenge,
    AuthOk,
    AuthResponse,
    Error,
    ErrorCode,
    Hello,
    Message,
)

PROOF_LABEL = b"respkv-peer-auth/1"  # domain separation: these MACs sign nothing else


class Role(enum.Enum):
    INITIATOR = b"I"
    ACCEPTOR = b"A"


class HandshakeError(ClusterError):
    """The handshake failed; ``code`` says why. ``by_peer`` is True when the peer refused us
    (it sent ERROR); otherwise we refuse the peer and should tell it with an ERROR frame."""

    def __init__(self, code: ErrorCode | int, text: str, *, by_peer: bool = False) -> None:
        super().__init__(f"{'refused by peer' if by_peer else 'refused'}: {text}")
        self.code = code
        self.text = text
        self.by_peer = by_peer


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_RESPONSE = "await_response"
    AWAIT_OK = "await_ok"
    DONE = "done"
    FAILED = "failed"


# What each state accepts from the peer (invariant 3). ERROR is accepted in every live state.
EXPECTED: dict[State, type[Message]] = {
    State.AWAIT_HELLO: Hello,
    State.AWAIT_CHALLENGE: AuthChallenge,
    State.AWAIT_RESPONSE: AuthResponse,
    State.AWAIT_OK: AuthOk,
}


def transcript(cluster_name: str, version: int, initiator_id: str, acceptor_id: str,
               initiator_nonce: bytes, acceptor_nonce: bytes) -> bytes:
    """The bytes both sides sign: an unambiguous (msgpack) encoding of the handshake."""
    return msgpack.packb([PROOF_LABEL, cluster_name, version, initiator_id, acceptor_id,
                          initiator_nonce, acceptor_nonce], use_bin_type=True)


def proof(secret: bytes, role: Role, signed: bytes) -> bytes:
    """The proof that the side playing ``role`` knows ``secret``."""
    return hmac.new(secret, role.value + signed, hashlib.sha256).digest()


def verify(secret: bytes, role: Role, signed: bytes, candidate: bytes) -> bool:
    """Whether ``candidate`` is the proof of ``role``; constant time in the candidate."""
    return hmac.compare_digest(proof(secret, role, signed), candidate)


class Handshake:
    """One side of one connection's handshake. Call ``start()`` once, send what it returns,
    then feed every frame the peer sends to ``receive()`` and send what it returns, until
    ``done``. ``receive`` raises HandshakeError on refusal (state becomes FAILED)."""

    def __init__(self, role: Role, node_id: str, cluster_name: str, secret: bytes,
                 rng: random.Random, *, expected_peer_id: str | None = None,
                 versions: tuple[int, int] = (PROTOCOL_VERSION, PROTOCOL_VERSION)) -> None:
        assert secret, "cluster-secret must not be empty"
        assert 0 < versions[0] <= versions[1]
        self.role = role
        self.node_id = node_id
        self.cluster_name = cluster_name
        self.expected_peer_id = expected_peer_id
        self.versions = versions
        self.state = State.AWAIT_HELLO
        self.peer_id: str | None = None
        self.version: int | None = None
        self._secret = secret
        self._nonce = rng.randbytes(NONCE_BYTES)
        self._peer_nonce: bytes | None = None

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def start(self) -> list[Message]:
        """The first flight: HELLO and AUTH_CHALLENGE."""
        return [Hello(self.versions[0], self.versions[1], self.node_id, self.cluster_name),
                AuthChallenge(self._nonce)]

    def receive(self, message: Message) -> list[Message]:
        """Messages to send in answer to the peer's ``message``."""
        if isinstance(message, Error) and self.state in EXPECTED:
            self.state = State.FAILED
            raise HandshakeError(message.code, message.text, by_peer=True)
        expected = EXPECTED.get(self.state)
        if expected is None or type(message) is not expected:
            return self._refuse(ErrorCode.PROTOCOL,
                                f"unexpected {type(message).__name__} in state {self.state.value}")
        if isinstance(message, Hello):
            return self._on_hello(message)
        if isinstance(message, AuthChallenge):
            return self._on_challenge(message)
        if isinstance(message, AuthResponse):
            return self._on_response(message)
        self.state = State.DONE  # AuthOk: the peer verified us, and we verified it before
        return []

    def _on_hello(self, hello: Hello) -> list[Message]:
        if hello.version_min > hello.version_max:
            return self._refuse(ErrorCode.PROTOCOL, "HELLO version_min > version_max")
        version = min(self.versions[1], hello.version_max)
        if version < max(self.versions[0], hello.version_min):
            return self._refuse(ErrorCode.VERSION_MISMATCH,
                                f"no common protocol version: we speak {self.versions[0]}.."
                                f"{self.versions[1]}, peer {hello.version_min}.."
                                f"{hello.version_max}")
        if hello.cluster_name != self.cluster_name:
            return self._refuse(ErrorCode.CLUSTER_MISMATCH,
                                f"peer is in cluster {hello.cluster_name!r}, "
                                f"not {self.cluster_name!r}")
        if hello.node_id == self.node_id:
            return self._refuse(ErrorCode.WRONG_NODE, "peer has this node's own id")
        if self.expected_peer_id is not None and hello.node_id != self.expected_peer_id:
            return self._refuse(ErrorCode.WRONG_NODE,
                                f"expected node {self.expected_peer_id}, found {hello.node_id}")
        self.version = version
        self.peer_id = hello.node_id
        self.state = State.AWAIT_CHALLENGE
        return []

    def _on_challenge(self, challenge: AuthChallenge) -> list[Message]:
        if hmac.compare_digest(challenge.nonce, self._nonce):
            return self._refuse(ErrorCode.AUTH_FAILED, "peer reflected our nonce")
        self._peer_nonce = challenge.nonce
        self.state = State.AWAIT_RESPONSE
        return [AuthResponse(proof(self._secret, self.role, self._transcript()))]

    def _on_response(self, response: AuthResponse) -> list[Message]:
        peer_role = Role.ACCEPTOR if self.role is Role.INITIATOR else Role.INITIATOR
        if not verify(self._secret, peer_role, self._transcript(), response.proof):
            return self._refuse(ErrorCode.AUTH_FAILED,
                                "peer's proof does not verify (wrong cluster-secret?)")
        self.state = State.AWAIT_OK
        return [AuthOk()]

    def _transcript(self) -> bytes:
        assert self.version is not None and self.peer_id is not None
        assert self._peer_nonce is not None
        if self.role is Role.INITIATOR:
            return transcript(self.cluster_name, self.version, self.node_id, self.peer_id,
                              self._nonce, self._peer_nonce)
        return transcript(self.cluster_name, self.version, self.peer_id, self.node_id,
                          self._peer_nonce, self._nonce)

    def _refuse(self, code: ErrorCode, text: str) -> NoReturn:
        self.state = State.FAILED
        raise HandshakeError(code, text)
