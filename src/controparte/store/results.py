"""The results of flow tests (`Store.add_flow_results`, `Store.flow_results`), written
once for both engines over the runners each supplies (`relays.Writes`).

Bounded: after adding results, each flow they are of keeps its newest `keep` rows
(by time, then by id), whatever its ports; and a result goes with either end of its
plan or its reporter (the foreign keys cascade)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controparte.model.flowresult import FlowResult, Outcome, ResultSource
from controparte.store.relays import Runner, Writes
from controparte.store.rows import stamp, utc

COLUMNS = "caller, callee, feature, flow, ports, outcome, at, source, reporter, detail, account"
"""A result's columns, in the order of `FlowResult`'s fields."""


def _row(row: Sequence[Any]) -> FlowResult:
    caller, callee, feature, flow, ports, outcome, at, source, reporter, detail, account = row
    return FlowResult(
        str(caller),
        str(callee),
        str(feature),
        str(flow),
        str(ports),
        Outcome(str(outcome)),
        utc(at),
        ResultSource(str(source)),
        str(reporter),
        str(detail),
        None if account is None else str(account),
    )


def _values(result: FlowResult) -> tuple[object, ...]:
    return (
        result.caller,
        result.callee,
        result.feature,
        result.flow,
        result.ports,
        result.outcome.value,
        stamp(result.at),
        result.source.value,
        result.reporter,
        result.detail,
        result.account,
    )


class Results(Writes):
    """The flow results' part of a store (a mixin beside `Reads`)."""

    def add_flow_results(self, results: Sequence[FlowResult], keep: int) -> None:
        if not results:
            return
        p = self.PLACEHOLDER
        flow = f"caller = {p} AND callee = {p} AND feature = {p} AND flow = {p}"

        def add(run: Runner) -> None:
            marks = ", ".join([p] * len(COLUMNS.split(", ")))
            for result in results:
                run(f"INSERT INTO flow_results ({COLUMNS}) VALUES ({marks})", _values(result))
            for key in dict.fromkeys((r.caller, r.callee, r.feature, r.flow) for r in results):
                run(
                    f"DELETE FROM flow_results WHERE {flow} AND id NOT IN (SELECT id FROM"
                    f" flow_results WHERE {flow} ORDER BY at DESC, id DESC LIMIT {p})",
                    (*key, *key, keep),
                )

        self._write(add)

    def flow_results(self, caller: str, callee: str, feature: str) -> list[FlowResult]:
        p = self.PLACEHOLDER
        found = self._rows(
            f"SELECT {COLUMNS} FROM flow_results WHERE caller = {p} AND callee = {p}"
            f" AND feature = {p} ORDER BY at DESC, id",
            (caller, callee, feature),
        )
        return [_row(r) for r in found]
