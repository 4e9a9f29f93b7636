"""Flow results on each engine: stored and read back as they were, newest first, codes
in any case; each flow keeps its newest rows only; removing an installation removes the
results of its plans and those it reported."""

from __future__ import annotations

from datetime import timedelta

from controparte.model import Installation
from controparte.model.flowresult import FlowResult, Outcome, ResultSource
from controparte.model.installation import utcnow
from controparte.store import Origin, Store

T0 = utcnow()


def seed(store: Store) -> None:
    with store.transaction(Origin()) as tx:
        for code, label in (("A-1", "alpha"), ("B-1", "beta"), ("C-1", "gamma")):
            tx.insert(Installation(code=code, label=label, created=T0, updated=T0))


def result(
    flow: str = "outbound:A-1->B-1",
    seconds: int = 0,
    outcome: Outcome = Outcome.PASSED,
    *,
    reporter: str = "A-1",
    caller: str = "A-1",
) -> FlowResult:
    return FlowResult.create(
        caller=caller,
        callee="B-1",
        feature="prima-nota",
        flow=flow,
        ports="4443",
        outcome=outcome,
        at=T0 + timedelta(seconds=seconds),
        source=ResultSource.DOCTOR,
        reporter=reporter,
        detail="connected to <b>'x'</b> in 3 ms",
    )


def test_results_round_trip_newest_first(store: Store) -> None:
    seed(store)
    first, second = result(seconds=1), result("return:B-1->A-1", 2, Outcome.FAILED)
    store.add_flow_results([first, second], keep=5)
    assert store.flow_results("a-1", "b-1", "prima-nota") == [second, first]
    assert store.flow_results("B-1", "A-1", "prima-nota") == []  # the plan has a direction
    assert store.flow_results("A-1", "B-1", "fatture") == []
    store.add_flow_results([], keep=5)  # nothing to do


def test_each_flow_keeps_its_newest_rows(store: Store) -> None:
    seed(store)
    store.add_flow_results([result(seconds=s) for s in range(6)], keep=3)
    other = result("return:B-1->A-1", 0)
    store.add_flow_results([other], keep=3)
    store.add_flow_results([result(seconds=-5)], keep=3)  # older than every kept one
    kept = store.flow_results("A-1", "B-1", "prima-nota")
    assert [r.at for r in kept if r.flow == "outbound:A-1->B-1"] == [
        T0 + timedelta(seconds=s) for s in (5, 4, 3)
    ]
    assert other in kept


def test_results_go_with_their_installations(store: Store) -> None:
    seed(store)
    store.add_flow_results([result(), result(reporter="C-1")], keep=5)
    with store.transaction(Origin()) as tx:
        gone = tx.get("C-1")
        assert gone is not None
        tx.delete(gone)
    assert [r.reporter for r in store.flow_results("A-1", "B-1", "prima-nota")] == ["A-1"]
    with store.transaction(Origin()) as tx:
        gone = tx.get("B-1")
        assert gone is not None
        tx.delete(gone)
    assert store.flow_results("A-1", "B-1", "prima-nota") == []
