"""Counterpart links: which installation calls which, for which features.

A link (A, B, feature) says that A is the caller and B the callee of `feature`: A is,
say, the company that sends its prima nota, B its accountant's studio. Direction
matters for the plan (who opens the outbound flow, who answers asynchronously); for
Real Time the flows run both ways, so a Real Time link's direction is a convention.

Contracts:
- `add` needs both installations (by code or label), a feature of the catalog and two
  different installations; a link that exists already is left as it is (idempotent)
  and reported as not new. All features of one call are added in one transaction.
- `remove` removes the links from A to B (of one feature, when given), never those from
  B to A; a NotFoundError when there was none.
- Links are audited in the history of both installations (`link`, `unlink`).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass

from controparte.errors import NotFoundError, ValidationError
from controparte.model import Installation, Link, validate_feature_id
from controparte.model.installation import utcnow
from controparte.plan.catalog import Catalog
from controparte.service.registry import Registry
from controparte.store import Origin


@dataclass(frozen=True, slots=True)
class LinkResult:
    """One link asked for: the link as stored and whether this call created it."""

    link: Link
    created: bool


class Links:
    """Link use-cases over the registry's store, checked against `catalog`."""

    def __init__(self, registry: Registry, catalog: Catalog) -> None:
        self.registry = registry
        self.catalog = catalog

    def _ends(self, a: str, b: str) -> tuple[Installation, Installation]:
        caller, callee = self.registry.find(a), self.registry.find(b)
        if caller.code.lower() == callee.code.lower():
            raise ValidationError("b", "an installation cannot be linked to itself")
        return caller, callee

    def add(
        self, a: str, b: str, features: Sequence[str], origin: Origin | None = None
    ) -> builtins.list[LinkResult]:
        """Link caller `a` to callee `b` (codes or labels) for each of `features`, in
        order; repeated features count once. Raises NotFoundError for an unknown
        installation, ValidationError for an unknown feature, no feature, or a == b."""
        if not features:
            raise ValidationError("feature", "name at least one feature")
        wanted = list(dict.fromkeys(features))
        for feature in wanted:
            self.catalog.feature(validate_feature_id(feature))
        caller, callee = self._ends(a, b)
        now = utcnow()
        results = []
        with self.registry.store.transaction(origin or Origin()) as tx:
            for code in (caller.code, callee.code):
                if tx.get(code) is None:  # removed since it was found
                    raise NotFoundError(f"no installation with code {code!r}")
            for feature in wanted:
                link = Link.create(caller.code, callee.code, feature, now=now)
                results.append(LinkResult(link, tx.add_link(link)))
        # A link that was there already keeps its own creation time.
        stored = {
            link.feature: link
            for link in self.registry.store.links(caller.code)
            if link == Link(caller.code, callee.code, link.feature)
        }
        return [LinkResult(stored.get(r.link.feature, r.link), r.created) for r in results]

    def list(self, code: str | None = None) -> builtins.list[Link]:
        """Every link, or those where `code` (a code or label) is caller or callee."""
        if code is None:
            return self.registry.store.links()
        return self.registry.store.links(self.registry.find(code).code)

    def remove(
        self, a: str, b: str, feature: str | None = None, origin: Origin | None = None
    ) -> builtins.list[Link]:
        """Remove the links from caller `a` to callee `b` (codes or labels), of
        `feature` only when given; the links removed. NotFoundError when none was."""
        if feature is not None:
            validate_feature_id(feature)
        caller, callee = self._ends(a, b)
        with self.registry.store.transaction(origin or Origin()) as tx:
            removed = tx.remove_link(caller.code, callee.code, feature)
        if not removed:
            what = "" if feature is None else f" for {feature}"
            raise NotFoundError(f"no link from {caller.code} to {callee.code}{what}")
        return removed
