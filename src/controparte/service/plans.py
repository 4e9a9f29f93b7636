"""Plans and firewall rules for registered installations: the registry and the links
feed the pure planner (`plan/planner.py`) and the renderers (`plan/firewall.py`).

Contracts:
- `plan(caller, callee, feature)`: both named by code, label or `<label>.<zone>`
  (`Registry.find`); the feature must be in the catalog; caller and callee differ.
- `firewall(code)`: the rules `code`'s side needs for every link it is part of, as
  caller (links from it) and as callee (links to it). Rules about a counterpart are
  limited to the counterpart's current public addresses; a rule that would have to
  name a counterpart without any registered address is left out (and said so), never
  widened to "anyone". Exceptions, by nature: the start-live hosts are known by name
  (matched by port, named in the comment), and remote access comes from the caller's
  iDesk clients, wherever they are.
- Where an inbound rule is limited to counterparts' addresses, the service's probe
  sources (the setting `probe_sources`) are admitted on the same port, with a comment
  of their own (`plan/firewall.py:probe_admissions`); without `probe_sources` a note
  says that the probe will not get through, and which setting fixes that.
- `firewall` compares each counterpart's addresses with what the previous run for
  `code` saw and reports the differences. `record(report)` then stores the addresses the
  report showed as the ones seen now; `firewall(code, record=True)` does both at once. A
  front end records after it has shown the report, so a failed run records nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controparte.errors import ValidationError
from controparte.model import Installation, Link
from controparte.model.installation import utcnow
from controparte.plan.catalog import Catalog
from controparte.plan.firewall import limits_inbound, probe_admissions, render_many
from controparte.plan.planner import Action, Initiator, Party, Plan, Role, Rule, plan
from controparte.plan.wire import rule_dict
from controparte.service.registry import Registry
from controparte.store import Origin, SeenAddresses

FIREWALL_SCHEMA = "controparte.firewall/1"
PROBE_KEPT_OUT = (
    "the service's outside-in probe (controparte doctor) will not get through the"
    " inbound rules limited to the counterparts: set probe_sources to the service's"
    " public addresses (CONTROPARTE_PROBE_SOURCES) to admit it as well"
)


def addresses_of(inst: Installation) -> tuple[str, ...]:
    """The public addresses of `inst` as the planner uses them: IPv4, then IPv6."""
    return Party.of(inst).addresses


def _when(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def _listed(addresses: Sequence[str] | None) -> str:
    return " ".join(addresses) if addresses else "(no address)"


@dataclass(frozen=True, slots=True)
class AddressChange:
    """A counterpart whose addresses differ from the previous run's: `before` None is a
    counterpart new since then, `after` None one that is no longer linked. `since` is
    the time of the previous run."""

    counterpart: str
    label: str
    before: tuple[str, ...] | None
    after: tuple[str, ...] | None
    since: datetime

    @property
    def kind(self) -> str:
        """ "changed", "new" or "gone"."""
        if self.before is None:
            return "new"
        return "gone" if self.after is None else "changed"

    def text(self) -> str:
        """One line, e.g. `changed since <time>: acme 203.0.113.10 -> 203.0.113.20`."""
        when = _when(self.since)
        if self.before is None:
            return f"new since {when}: {self.label} {_listed(self.after)}"
        if self.after is None:
            return f"gone since {when}: {self.label} {_listed(self.before)} (no longer linked)"
        return f"changed since {when}: {self.label} {_listed(self.before)} -> {_listed(self.after)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "counterpart": self.counterpart,
            "label": self.label,
            "before": None if self.before is None else list(self.before),
            "after": None if self.after is None else list(self.after),
            "since": self.since.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class FirewallPart:
    """One link seen from the installation's side: its plan, the rules kept for the
    side and the rules left out for want of a counterpart address."""

    link: Link
    side: Role
    plan: Plan
    rules: tuple[Rule, ...]
    skipped: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class FirewallReport:
    """What `controparte firewall CODE` shows."""

    installation: Installation
    parts: tuple[FirewallPart, ...]
    counterparts: tuple[Installation, ...]
    changes: tuple[AddressChange, ...]
    previous_run: datetime | None
    notes: tuple[str, ...]
    probe_sources: tuple[str, ...] = ()
    probe: tuple[Rule, ...] = ()
    """The rules that admit the service's probe (`probe_admissions`)."""

    def header(self) -> list[str]:
        """The lines a script starts with (as comments): who, what, and every warning."""
        inst = self.installation
        lines = [f"controparte firewall rules for {inst.label} ({inst.code})"]
        if not self.parts:
            lines.append("no links: nothing to allow (see `controparte link add`)")
        for part in self.parts:
            link = part.link
            lines.append(f"link {link.a} -> {link.b}: {link.feature} (this side: {part.side})")
        if any(
            r.origin is Initiator.CLIENTS and r.action is Action.EGRESS
            for part in self.parts
            for r in part.rules
        ):
            lines.append("remote-access egress rules apply to every iDesk client's network")
        for part in self.parts:
            for flow in part.plan.blocked:
                lines.append(f"BLOCKED {flow.description}: {flow.blocked}. Fix: {flow.fix}")
        lines += list(self.notes)
        return lines

    def script(self, fmt: str) -> str:
        """The rules in `fmt` (nftables, iptables or windows), each distinct line once."""
        parts = [(p.plan, p.rules) for p in self.parts]
        return render_many(self.header(), parts, fmt, self.probe)

    def to_dict(self, fmt: str) -> dict[str, Any]:
        """The report in schema `controparte.firewall/1` (see docs/connectivity.md)."""
        return {
            "schema": FIREWALL_SCHEMA,
            "code": self.installation.code,
            "label": self.installation.label,
            "counterparts": [
                {"code": c.code, "label": c.label, "addresses": list(addresses_of(c))}
                for c in self.counterparts
            ],
            "links": [
                {
                    **part.link.to_dict(),
                    "side": part.side.value,
                    "rules": [rule_dict(r) for r in part.rules],
                    "skipped": [rule_dict(r) for r in part.skipped],
                    "blocked": [
                        {"flow": f.id, "blocked": f.blocked, "fix": f.fix}
                        for f in part.plan.blocked
                    ],
                }
                for part in self.parts
            ],
            "previous_run": None if self.previous_run is None else self.previous_run.isoformat(),
            "changes": [c.to_dict() for c in self.changes],
            "notes": list(self.notes),
            "probe_sources": list(self.probe_sources),
            "probe_rules": [rule_dict(r) for r in self.probe],
            "format": fmt,
            "script": self.script(fmt),
        }


def _kept(rule: Rule) -> bool:
    """Whether a rule can be limited to known peers (see the module's contract)."""
    if rule.names or rule.peer_addresses:
        return True
    return rule.origin is Initiator.CLIENTS and rule.action is not Action.EGRESS


class Plans:
    """Plans between registered installations, and per-installation firewall rules."""

    def __init__(self, registry: Registry, catalog: Catalog) -> None:
        self.registry = registry
        self.catalog = catalog

    def plan(self, caller: str, callee: str, feature: str) -> Plan:
        """The plan of `feature` from `caller` to `callee` (codes or labels). Raises
        NotFoundError for an unknown installation, ValidationError for an unknown
        feature or when both name the same installation."""
        chosen = self.catalog.feature(feature)
        a, b = self.registry.find(caller), self.registry.find(callee)
        if a.code.lower() == b.code.lower():
            raise ValidationError("callee", "caller and callee are the same installation")
        return plan(a, b, chosen, self.catalog)

    def record(self, report: FirewallReport, now: datetime | None = None) -> None:
        """Store the counterpart addresses `report` showed as what its installation's
        last run saw (at `now`); counterparts no longer linked are forgotten."""
        seen = {c.code: addresses_of(c) for c in report.counterparts}
        with self.registry.store.transaction(Origin(via="firewall")) as tx:
            tx.set_firewall_seen(report.installation.code, seen, now or utcnow())

    def firewall(
        self, code: str, *, record: bool = False, now: datetime | None = None
    ) -> FirewallReport:
        """The firewall report for `code` (a code or label): see the module contract.
        With `record`, the addresses shown are recorded at once (see `record`)."""
        inst = self.registry.find(code)
        counterparts: dict[str, Installation] = {}
        parts: list[FirewallPart] = []
        notes: list[str] = []
        for link in self.registry.store.links(inst.code):
            other = self.registry.get(link.b if _calls(inst, link) else link.a)
            counterparts.setdefault(other.code, other)
            part = self._part(inst, other, link, notes)
            if part is not None:
                parts.append(part)
        previous = self.registry.store.firewall_seen(inst.code)
        previous_run = max((p.at for p in previous.values()), default=None)
        sources = self.registry.settings.probe_sources
        rules = [r for part in parts for r in part.rules]
        if not sources and any(limits_inbound(r) for r in rules):
            notes.append(PROBE_KEPT_OUT)
        report = FirewallReport(
            inst,
            tuple(parts),
            tuple(counterparts.values()),
            tuple(self._address_changes(counterparts, previous, previous_run)),
            previous_run,
            tuple(dict.fromkeys(notes)),
            sources,
            probe_admissions(rules, sources),
        )
        if record:
            self.record(report, now)
        return report

    def _part(
        self, inst: Installation, other: Installation, link: Link, notes: list[str]
    ) -> FirewallPart | None:
        """The rules `inst` needs for `link` with `other`; what they leave out, or why
        there are none, is added to `notes`."""
        feature = self.catalog.features.get(link.feature)
        if feature is None:
            notes.append(
                f"link {link.a} -> {link.b}: feature {link.feature!r} is not in the"
                " catalog any more: no rules (remove the link or restore the feature)"
            )
            return None
        if _calls(inst, link):
            side, found = Role.CALLER, plan(inst, other, feature, self.catalog)
        else:
            side, found = Role.CALLEE, plan(other, inst, feature, self.catalog)
        rules = found.rules_for(side)
        kept = tuple(r for r in rules if _kept(r))
        skipped = tuple(r for r in rules if not _kept(r))
        for rule in skipped:
            notes.append(
                f"left out for {link.feature}: {rule.action} {rule.ports_text} for"
                f" {rule.peer_name}, which has no registered public address"
            )
        return FirewallPart(link, side, found, kept, skipped)

    def _address_changes(
        self,
        counterparts: Mapping[str, Installation],
        previous: Mapping[str, SeenAddresses],
        previous_run: datetime | None,
    ) -> list[AddressChange]:
        """How the counterparts' addresses differ from what the previous run saw."""
        seen = {c: addresses_of(i) for c, i in counterparts.items()}
        changes: list[AddressChange] = []
        lower = {c.lower(): c for c in seen}
        for old_code, old in previous.items():
            current = lower.get(old_code.lower())
            if current is None:
                gone = self.registry.store.get(old_code)
                label = gone.label if gone is not None else old_code
                changes.append(AddressChange(old_code, label, old.addresses, None, old.at))
            elif seen[current] != old.addresses:
                changes.append(
                    AddressChange(
                        current, counterparts[current].label, old.addresses, seen[current], old.at
                    )
                )
        if previous_run is not None:
            known = {c.lower() for c in previous}
            for current, addresses in seen.items():
                if current.lower() not in known:
                    changes.append(
                        AddressChange(
                            current, counterparts[current].label, None, addresses, previous_run
                        )
                    )
        return changes


def _calls(inst: Installation, link: Link) -> bool:
    """Whether `inst` is the caller of `link` (else the callee)."""
    return link.a.lower() == inst.code.lower()
