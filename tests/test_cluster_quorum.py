"""Consistency levels and the pure quorum cores (cluster/consistency.py, put_core.py,
get_core.py): tables of scenarios, and a property test that arrival order does not matter."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import consistency
from cluster.consistency import (
    ConsistencyError,
    Failed,
    Level,
    NoQuorum,
    NoQuorumError,
    Requirement,
    quorum,
    required,
)
from cluster.get_core import NOP, Found, GetCore, ReadRepair
from cluster.put_core import ACKED, PutCore, PutOk, PutResult
from cluster.version import Siblings, Version, merge

# Consistency levels ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "level"), [
    ("ONE", Level.ONE), ("one", Level.ONE), ("Two", Level.TWO), ("THREE", Level.THREE),
    ("quorum", Level.QUORUM), ("ALL", Level.ALL), ("local_quorum", Level.LOCAL_QUORUM),
    ("EACH_QUORUM", Level.EACH_QUORUM), ("1", 1), ("2", 2), ("64", 64), (b"QUORUM", Level.QUORUM),
    (" all ", Level.ALL),
])
def test_parse(text: str | bytes, level: consistency.Consistency) -> None:
    assert consistency.parse(text) == level
    assert consistency.parse(consistency.to_text(level)) == level


@pytest.mark.parametrize("text", [
    "", "0", "65", "-1", "1.5", "QUORUMS", "LOCAL", "٣", b"\xff", "R 2", "TWO THREE",
])
def test_parse_rejects(text: str | bytes) -> None:
    with pytest.raises(ConsistencyError):
        consistency.parse(text)


@pytest.mark.parametrize(("n", "q"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4)])
def test_quorum(n: int, q: int) -> None:
    assert quorum(n) == q
    assert 2 * q > n  # two quorums intersect


DC1 = {"dc1": 3}
TWO_DCS = {"dc1": 3, "dc2": 2}


@pytest.mark.parametrize(("level", "replication", "expected"), [
    (Level.ONE, DC1, Requirement(1)),
    (Level.TWO, DC1, Requirement(2)),
    (Level.THREE, DC1, Requirement(3)),
    (Level.QUORUM, DC1, Requirement(2)),
    (Level.ALL, DC1, Requirement(3)),
    (2, DC1, Requirement(2)),
    (Level.QUORUM, TWO_DCS, Requirement(3)),
    (Level.ALL, TWO_DCS, Requirement(5)),
    (Level.LOCAL_QUORUM, TWO_DCS, Requirement(0, (("dc1", 2),))),
    (Level.EACH_QUORUM, TWO_DCS, Requirement(0, (("dc1", 2), ("dc2", 2)))),
    (Level.QUORUM, {"dc1": 1}, Requirement(1)),
])
def test_required(level: consistency.Consistency, replication: dict[str, int],
                  expected: Requirement) -> None:
    assert required(level, replication, "dc1") == expected


@pytest.mark.parametrize(("level", "replication", "local"), [
    (Level.THREE, {"dc1": 2}, "dc1"),
    (4, DC1, "dc1"),
    (Level.LOCAL_QUORUM, DC1, "dc9"),
])
def test_required_refuses_the_impossible(level: consistency.Consistency,
                                         replication: dict[str, int], local: str) -> None:
    with pytest.raises(ConsistencyError):
        required(level, replication, local)


def test_noquorum_text_is_built_in_one_place() -> None:
    assert NoQuorum(1, 2).message == "NOQUORUM 1 of 2 required replicas answered"
    assert NoQuorum(0, 2, "dc2").message == (
        "NOQUORUM 0 of 2 required replicas answered in datacenter dc2")
    error = NoQuorum(1, 2).error()
    assert isinstance(error, NoQuorumError)
    assert str(error) == "NOQUORUM 1 of 2 required replicas answered"


# Put core -------------------------------------------------------------------------------

ABC = {"a": "dc1", "b": "dc1", "c": "dc1"}
FAIL = Failed("boom")

# (scenario, requirement, results in arrival order, index after which enough() first holds,
#  response)
PUT_TABLE: list[tuple[str, Requirement, list[tuple[str, PutResult]], int, object]] = [
    ("w2_two_acks", Requirement(2), [("a", ACKED), ("b", ACKED), ("c", ACKED)], 1, PutOk(2)),
    ("w2_ack_fail_ack", Requirement(2), [("a", ACKED), ("b", FAIL), ("c", ACKED)], 2, PutOk(2)),
    ("w2_two_failures", Requirement(2), [("a", FAIL), ("b", FAIL), ("c", ACKED)], 1,
     NoQuorum(0, 2)),
    ("w2_ack_then_two_failures", Requirement(2), [("a", ACKED), ("b", FAIL), ("c", FAIL)], 2,
     NoQuorum(1, 2)),
    ("w1_first_ack", Requirement(1), [("c", ACKED), ("a", FAIL), ("b", FAIL)], 0, PutOk(1)),
    ("w1_needs_all_three_failures", Requirement(1), [("a", FAIL), ("b", FAIL), ("c", FAIL)], 2,
     NoQuorum(0, 1)),
    ("w3_one_failure_is_fatal", Requirement(3), [("a", ACKED), ("b", FAIL), ("c", ACKED)], 1,
     NoQuorum(1, 3)),
    ("duplicate_ack_counts_once", Requirement(2), [("a", ACKED), ("a", ACKED), ("b", ACKED)], 2,
     PutOk(2)),
    ("duplicate_failure_counts_once", Requirement(2),
     [("a", FAIL), ("a", FAIL), ("b", ACKED), ("c", ACKED)], 3, PutOk(2)),
    ("ack_after_failure_of_same_replica_ignored", Requirement(2),
     [("a", FAIL), ("a", ACKED), ("b", FAIL)], 2, NoQuorum(0, 2)),
]


@pytest.mark.parametrize(("requirement", "results", "enough_at", "response"),
                         [case[1:] for case in PUT_TABLE], ids=[case[0] for case in PUT_TABLE])
def test_put_core_table(requirement: Requirement, results: list[tuple[str, PutResult]],
                        enough_at: int, response: object) -> None:
    core: PutCore[str] = PutCore(ABC, requirement)
    assert not core.enough()
    first = None
    for i, (replica, result) in enumerate(results):
        core.add_result(replica, result)
        if core.enough() and first is None:
            first = i
            answered = core.response()
    assert first == enough_at
    assert answered == response
    assert core.response() == response  # late results do not change the answer


def test_put_core_late_results_are_absorbed() -> None:
    core: PutCore[str] = PutCore(ABC, Requirement(2))
    core.add_result("a", ACKED)
    core.add_result("b", ACKED)
    assert core.enough()
    assert not core.done()
    core.add_result("c", Failed("disk full"))
    assert core.done()
    assert core.response() == PutOk(2)
    assert core.failures == {"c": "disk full"}


def test_put_core_timeout_fails_silent_replicas() -> None:
    core: PutCore[str] = PutCore(ABC, Requirement(2))
    core.add_result("b", ACKED)
    assert core.time_out() == ["a", "c"]
    assert core.enough()
    assert core.done()
    assert core.response() == NoQuorum(1, 2)
    assert core.response().message == "NOQUORUM 1 of 2 required replicas answered"  # type: ignore[union-attr]
    core.add_result("a", ACKED)  # a reply after the timeout: ignored, already failed
    assert core.response() == NoQuorum(1, 2)


def test_put_core_fewer_targets_than_required_fails_at_once() -> None:
    core: PutCore[str] = PutCore({"a": "dc1"}, Requirement(2))
    assert core.enough()
    assert core.response() == NoQuorum(0, 2)


def test_put_core_response_before_enough_is_a_bug() -> None:
    core: PutCore[str] = PutCore(ABC, Requirement(2))
    with pytest.raises(AssertionError):
        core.response()


def test_put_core_rejects_unknown_replica() -> None:
    core: PutCore[str] = PutCore(ABC, Requirement(2))
    with pytest.raises(AssertionError):
        core.add_result("z", ACKED)


TWO_DC_TARGETS = {"a": "dc1", "b": "dc1", "c": "dc1", "x": "dc2", "y": "dc2"}


@pytest.mark.parametrize(("requirement", "results", "response"), [
    # LOCAL_QUORUM in dc1: dc2's acks do not count.
    (Requirement(0, (("dc1", 2),)), [("x", ACKED), ("y", ACKED), ("a", ACKED)], None),
    (Requirement(0, (("dc1", 2),)), [("x", ACKED), ("a", ACKED), ("b", ACKED)], PutOk(3)),
    # EACH_QUORUM: dc2 losing both replicas fails the write even with dc1 complete.
    (Requirement(0, (("dc1", 2), ("dc2", 2))),
     [("a", ACKED), ("b", ACKED), ("c", ACKED), ("x", FAIL)], NoQuorum(0, 2, "dc2")),
    (Requirement(0, (("dc1", 2), ("dc2", 2))),
     [("a", ACKED), ("x", ACKED), ("b", ACKED), ("y", ACKED)], PutOk(4)),
])
def test_put_core_per_datacenter(requirement: Requirement,
                                 results: list[tuple[str, PutResult]],
                                 response: object) -> None:
    core: PutCore[str] = PutCore(TWO_DC_TARGETS, requirement)
    for replica, result in results:
        core.add_result(replica, result)
    if response is None:
        assert not core.enough()
    else:
        assert core.enough()
        assert core.response() == response


# Get core -------------------------------------------------------------------------------

def version(actor: bytes, counters: dict[bytes, int], ts: int, value: bytes | None) -> Version:
    return ({a: (c, ts) for a, c in sorted(counters.items())}, ts, 0, actor, value)


V1 = version(b"n1", {b"n1": 1}, 100, b"v1")
V2 = version(b"n1", {b"n1": 2}, 200, b"v2")  # descends V1
W1 = version(b"n2", {b"n1": 1, b"n2": 1}, 150, b"w1")  # descends V1, concurrent with V2
TOMB = version(b"n3", {b"n1": 2, b"n2": 1, b"n3": 1}, 300, None)  # supersedes all


def answers_table() -> list[tuple[str, Requirement, list[tuple[str, object]], object, object]]:
    """(scenario, requirement, results, response at first enough(), final action)."""
    both = merge((V2,), (W1,))
    return [
        ("all_agree", Requirement(2), [("a", (V1,)), ("b", (V1,)), ("c", (V1,))],
         Found((V1,)), NOP),
        ("one_stale", Requirement(2), [("a", (V2,)), ("b", (V1,)), ("c", (V2,))],
         Found((V2,)), ReadRepair(("b",), (V2,))),
        ("stale_answers_first", Requirement(2), [("b", (V1,)), ("a", (V2,)), ("c", (V2,))],
         Found((V2,)), ReadRepair(("b",), (V2,))),
        ("not_found_on_one", Requirement(2), [("a", ()), ("b", (V1,)), ("c", (V1,))],
         Found((V1,)), ReadRepair(("a",), (V1,))),
        ("not_found_everywhere", Requirement(2), [("a", ()), ("b", ()), ("c", ())],
         Found(()), NOP),
        ("not_found_quorum_hides_late_value", Requirement(2), [("a", ()), ("b", ()), ("c", (V1,))],
         Found(()), ReadRepair(("a", "b"), (V1,))),
        ("divergent_siblings", Requirement(2), [("a", (V2,)), ("b", (W1,)), ("c", both)],
         Found(both), ReadRepair(("a", "b"), both)),
        ("late_reply_repairs_the_others", Requirement(1), [("a", (V1,)), ("b", (V1,)),
                                                           ("c", (V2,))],
         Found((V1,)), ReadRepair(("a", "b"), (V2,))),
        ("error_not_repaired", Requirement(2), [("a", FAIL), ("b", (V1,)), ("c", (V2,))],
         Found((V2,)), ReadRepair(("b",), (V2,))),
        ("noquorum_still_repairs", Requirement(3), [("a", (V1,)), ("b", FAIL), ("c", (V2,))],
         NoQuorum(1, 3), ReadRepair(("a",), (V2,))),
        ("two_errors", Requirement(2), [("a", FAIL), ("b", FAIL), ("c", (V1,))],
         NoQuorum(0, 2), NOP),
        ("tombstone_wins", Requirement(2), [("a", (V2,)), ("b", (TOMB,)), ("c", (W1,))],
         Found((TOMB,)), ReadRepair(("a", "c"), (TOMB,))),
        ("duplicate_answer_ignored", Requirement(2), [("a", (V1,)), ("a", (V2,)), ("b", (V1,)),
                                                      ("c", (V1,))],
         Found((V1,)), NOP),
    ]


GET_TABLE = answers_table()


@pytest.mark.parametrize(("requirement", "results", "response", "action"),
                         [case[1:] for case in GET_TABLE], ids=[case[0] for case in GET_TABLE])
def test_get_core_table(requirement: Requirement, results: list[tuple[str, object]],
                        response: object, action: object) -> None:
    core: GetCore[str] = GetCore(ABC, requirement)
    answered = None
    for replica, result in results:
        assert not core.done()
        core.add_result(replica, result)  # type: ignore[arg-type]
        if answered is None and core.enough():
            answered = core.response()
    assert answered == response
    assert core.done()
    assert core.final_action() == action


def test_get_core_final_action_waits_for_every_target() -> None:
    core: GetCore[str] = GetCore(ABC, Requirement(2))
    core.add_result("a", (V1,))
    core.add_result("b", (V2,))
    assert core.enough()
    with pytest.raises(AssertionError):
        core.final_action()
    assert core.time_out() == ["c"]
    assert core.final_action() == ReadRepair(("a",), (V2,))
    assert core.failures == {"c": "timeout"}


def test_get_core_unnormalised_answer_is_not_stale() -> None:
    """A replica may return its siblings in any order; the same set is not repaired."""
    both = merge((V2,), (W1,))
    core: GetCore[str] = GetCore({"a": "dc1", "b": "dc1"}, Requirement(2))
    core.add_result("a", both)
    core.add_result("b", tuple(reversed(both)))
    assert core.final_action() == NOP


# Arrival order does not matter ------------------------------------------------------------

ACTORS = [b"n1", b"n2", b"n3"]


@st.composite
def sibling_sets(draw: st.DrawFn) -> Siblings:
    versions: list[Version] = []
    for _ in range(draw(st.integers(0, 3))):
        counters = {a: draw(st.integers(1, 3)) for a in ACTORS if draw(st.booleans())}
        if not counters:
            counters = {draw(st.sampled_from(ACTORS)): 1}
        writer = draw(st.sampled_from(sorted(counters)))
        ts = draw(st.integers(0, 5))
        value = draw(st.sampled_from([b"x", b"y", None]))
        versions.append(version(writer, counters, ts, value))
    out: Siblings = ()
    for v in versions:
        out = merge(out, (v,))
    return out


REPLICAS = ["a", "b", "c", "d", "e"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(sibling_sets(), st.just(FAIL)), min_size=5, max_size=5),
       st.permutations(range(5)), st.permutations(range(5)), st.integers(1, 5))
def test_get_core_outcome_does_not_depend_on_arrival_order(
        answers: Sequence[Siblings | Failed], order1: Sequence[int], order2: Sequence[int],
        need: int) -> None:
    targets = {r: "dc1" for r in REPLICAS}
    cores = []
    for order in (order1, order2):
        core: GetCore[str] = GetCore(targets, Requirement(need))
        for i in order:
            core.add_result(REPLICAS[i], answers[i])
        cores.append(core)
    first, second = cores
    assert first.merged == second.merged
    assert first.final_action() == second.final_action()
    assert type(first.response()) is type(second.response())
    # The merge descends every answer: merging any answer into it changes nothing.
    for answer in answers:
        if not isinstance(answer, Failed):
            assert merge(first.merged, answer) == merge(first.merged, ())
    # Repair targets are exactly the answering replicas whose set differs from the merge.
    action = first.final_action()
    stale = set(action.targets) if isinstance(action, ReadRepair) else set()
    for i, answer in enumerate(answers):
        if isinstance(answer, Failed):
            assert REPLICAS[i] not in stale
        elif first.merged:
            assert (REPLICAS[i] in stale) == (merge(answer, ()) != first.merged)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), min_size=5, max_size=5), st.permutations(range(5)),
       st.integers(1, 5))
def test_put_core_outcome_does_not_depend_on_arrival_order(
        acks: Sequence[bool], order: Sequence[int], need: int) -> None:
    targets = {r: "dc1" for r in REPLICAS}
    core: PutCore[str] = PutCore(targets, Requirement(need))
    first = None
    for i in order:
        core.add_result(REPLICAS[i], ACKED if acks[i] else FAIL)
        if first is None and core.enough():
            first = core.response()
    ok = sum(acks) >= need
    assert isinstance(first, PutOk) == ok
    assert isinstance(core.response(), PutOk) == ok
    if isinstance(first, NoQuorum):
        assert first.answered < need
    else:
        assert first is not None
        assert first.acks >= need
