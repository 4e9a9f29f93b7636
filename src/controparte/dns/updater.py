"""RFC 2136 UPDATE signed with TSIG (RFC 8945): request bytes -> response bytes, with
the registry write in between. Synchronous and socket-free: the server calls `handle`
off its hot paths (an executor thread) and sends what it returns.

TSIG (RFC 8945), verified by `tsigauth.py` with its replay check:
- no TSIG: REFUSED, unsigned (an unsigned update is never applied);
- an unknown key, a wrong MAC: NOTAUTH with BADKEY or BADSIG, unsigned; a time out of
  range, a request accepted before (its bytes replayed), or one signed earlier than the
  latest accepted with the same key: NOTAUTH with BADTIME, signed. What was accepted is
  kept in the store until its Time Signed plus Fudge (and a margin) has passed, so the
  guard holds across restarts, DNS workers and nodes (`Access.accept_signed`);
- otherwise every response, whatever its rcode, is signed with the request's key;
- a transfer key (`KeyRole.TRANSFER`) verifies but may not update: REFUSED, signed;
- the store failing before the key is read (the database unavailable): the rcode of
  the error table (SERVFAIL), unsigned, as no key could be read to sign it.

Then `update.py` decides, inside one store transaction (`Registry.update_many`) against
the installations as that transaction reads them, so prerequisites hold when the change
commits and concurrent UPDATEs are serialised (RFC 2136 3.7). The response carries the
Zone Section only (RFC 2136 3.8). Secrets are never logged; key names are. One line
per UPDATE: at info when it was applied (NOERROR), at warning for a TSIG failure, and at
debug for any other refusal (unsigned, unreadable, refused), so that a flood of garbage
UPDATEs costs no log line a packet at the default level; all are counted by outcome.

Contract: `handle` never raises; None means "send nothing" (a response, not a request).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import dns.message
import dns.name
import dns.opcode
from dns.rcode import Rcode

from controparte.dns.answer import header_only
from controparte.dns.tsigauth import PARSE_ERRORS, Rejected, TsigVerifier, unsigned_response
from controparte.dns.update import (
    Plan,
    UpdateContext,
    UpdateRequest,
    check_zone,
    labels_referenced,
    parse_request,
    plan_update,
)
from controparte.dns.zone import Zone
from controparte.errors import ControparteError, MalformedError, response_for
from controparte.model import InstallationChange, ZoneConfig
from controparte.service.access import ResolvedKey
from controparte.service.registry import RegistryReader
from controparte.service.services import Services
from controparte.store import KeyRole, Origin

log = logging.getLogger("controparte.dns.update")


def is_update(wire: bytes) -> bool:
    """Whether `wire` is a request (QR clear) with opcode UPDATE: one byte test, for
    the hot loops."""
    return len(wire) > 2 and wire[2] & 0xF8 == dns.opcode.UPDATE << 3


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """The response to send (None: nothing) and whether the registry changed."""

    response: bytes | None
    changed: bool = False


class Updater:
    """Answers UPDATE requests for one zone through the service layer. Thread-safe."""

    def __init__(self, services: Services, config: ZoneConfig) -> None:
        self.registry = services.registry
        self.access = services.access
        self.config = config
        self.allow_non_global = services.settings.allow_non_global
        self.counts: Counter[str] = Counter()
        """Responses by rcode (or TSIG error) name, for metrics."""
        self.tsig = TsigVerifier(services.access.resolve_key, replay=services.access.accept_signed)
        self._lock = threading.Lock()

    def handle(self, wire: bytes, peer: str, zone: Zone) -> UpdateResult:
        """The response to one UPDATE from `peer` (an address, for the audit history),
        with `zone` the snapshot served now (for the SOA serial). Never raises."""
        try:
            return self._handle(wire, peer, zone)
        except ControparteError as exc:  # the store failed before the key was read
            rcode = Rcode.make(response_for(exc).dns_rcode)
            self._log(peer, None, Rcode.to_text(rcode), str(exc), warn=True)
            return UpdateResult(header_only(wire, rcode))
        except Exception:  # a bug must not stop the server: answer SERVFAIL, go on
            log.exception("internal error on an UPDATE from %s; answered SERVFAIL", peer)
            self._count("SERVFAIL")
            return UpdateResult(header_only(wire, Rcode.SERVFAIL))

    def _handle(self, wire: bytes, peer: str, zone: Zone) -> UpdateResult:
        if len(wire) < 12 or wire[2] & 0x80:
            return UpdateResult(None)
        try:
            request = dns.message.from_wire(wire, keyring=False)
        except PARSE_ERRORS:
            return self._unparsed(wire, peer, Rcode.FORMERR)
        if request.opcode() != dns.opcode.UPDATE:
            return self._unparsed(wire, peer, Rcode.NOTIMP)
        signed = self._authenticate(wire, request, peer)
        if isinstance(signed, UpdateResult):
            return signed
        verified, resolved, key_name = signed
        try:
            parsed = parse_request(wire)
        except MalformedError as exc:
            plan = _refused(exc)
        else:
            if resolved.role is not KeyRole.UPDATE:
                plan = Plan(Rcode.REFUSED, reason="a transfer key cannot sign an update")
            else:
                plan = check_zone(parsed, self.config.origin) or self._write(
                    parsed, resolved, key_name, peer, zone
                )
        self._log(peer, key_name, Rcode.to_text(plan.rcode), plan.reason)
        response = dns.message.make_response(verified)  # signed with the request's key
        response.set_rcode(plan.rcode)
        changed = plan.rcode == Rcode.NOERROR and bool(plan.changes)
        return UpdateResult(response.to_wire(), changed)

    def _authenticate(
        self, wire: bytes, request: dns.message.Message, peer: str
    ) -> tuple[dns.message.Message, ResolvedKey, dns.name.Name] | UpdateResult:
        """The request verified with its key, the key and its name; or, when TSIG
        fails (see the module), the response to send."""
        if not request.had_tsig or request.keyname is None:
            self._log(peer, None, "REFUSED", "the update is not signed (TSIG)")
            return UpdateResult(unsigned_response(request, Rcode.REFUSED))
        key_name = request.keyname
        checked = self.tsig.verify(request, wire)
        if isinstance(checked, Rejected):
            self._log(peer, key_name, checked.outcome, checked.reason, warn=checked.warn)
            return UpdateResult(checked.response)
        return checked.message, checked.key, key_name

    def _write(
        self,
        request: UpdateRequest,
        resolved: ResolvedKey,
        key_name: dns.name.Name,
        peer: str,
        zone: Zone,
    ) -> Plan:
        """Decide and apply in one store transaction; the plan (its rcode is what the
        table in `errors.py` gives if the registry refuses the change)."""
        origin = self.config.origin

        def decide(reader: RegistryReader) -> tuple[Plan, Mapping[str, InstallationChange]]:
            allowed: frozenset[bytes] | None = None
            if resolved.code is not None:
                own = reader.get(resolved.code)
                allowed = frozenset() if own is None else frozenset((own.label.encode(),))
            installations: dict[bytes, str] = {}
            rows = []
            for label in labels_referenced(request, origin):
                inst = reader.get_by_label(label)
                if inst is not None:
                    installations[label.encode()] = inst.code
                    rows.append(inst.dns_view())
            view = Zone.build(self.config, zone.serial, zone.seq, rows)
            context = UpdateContext(view, installations, allowed, self.allow_non_global)
            plan = plan_update(request, context)
            return plan, dict(plan.changes) if plan.rcode == Rcode.NOERROR else {}

        actor = resolved.code if resolved.code is not None else key_name.to_text()
        try:
            return self.registry.update_many(
                decide,
                Origin(actor=actor, via="rfc2136", source=peer),
            )
        except ControparteError as exc:
            return _refused(exc)

    # -- accounting --------------------------------------------------------------------

    def _unparsed(self, wire: bytes, peer: str, rcode: Rcode) -> UpdateResult:
        self._log(peer, None, Rcode.to_text(rcode), "cannot read the request")
        return UpdateResult(header_only(wire, rcode))

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _log(
        self,
        peer: str,
        key_name: dns.name.Name | None,
        outcome: str,
        reason: str,
        *,
        warn: bool = False,
    ) -> None:
        self._count(outcome)
        log.log(
            logging.WARNING if warn else logging.INFO if outcome == "NOERROR" else logging.DEBUG,
            "UPDATE from %s key %s: %s (%s)",
            peer,
            "-" if key_name is None else key_name.to_text(),
            outcome,
            reason,
        )


def _refused(error: ControparteError) -> Plan:
    """The plan for an error the service raised: its rcode from the table."""
    return Plan(Rcode.make(response_for(error).dns_rcode), reason=str(error))
