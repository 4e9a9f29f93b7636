"""RFC 2136 UPDATE signed with TSIG (RFC 8945): request bytes -> response bytes, with
the registry write in between. Synchronous and socket-free: the server calls `handle`
off its hot paths (an executor thread) and sends what it returns.

TSIG, as RFC 8945 section 5.2 and 5.3.2 ask of a server:
- no TSIG: REFUSED, unsigned (an unsigned update is never applied);
- a key we do not have, or another algorithm than the key's: NOTAUTH with TSIG error
  BADKEY, unsigned (empty MAC);
- a MAC that does not verify: NOTAUTH with BADSIG, unsigned;
- Time Signed further than Fudge from our clock, or earlier than the latest Time Signed
  already accepted with the same key (5.2.3): NOTAUTH with BADTIME, signed with the
  key, Time Signed copied from the request and our time in Other Data (48 bits);
- otherwise every response, whatever its rcode, is signed with the request's key;
- a transfer key (`KeyRole.TRANSFER`) verifies but may not update: REFUSED, signed.

Then `update.py` decides, inside one store transaction (`Registry.update_many`) against
the installations as that transaction reads them, so prerequisites hold when the change
commits and concurrent UPDATEs are serialised (RFC 2136 3.7). The response carries the
Zone Section only (RFC 2136 3.8). Secrets are never logged; key names are.

Contract: `handle` never raises; None means "send nothing" (a response, not a request).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig
from dns.rcode import Rcode

from controparte.dns.answer import header_only
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

_PARSE_ERRORS = (dns.exception.DNSException, ValueError, IndexError, UnicodeError)


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
        self._latest: dict[dns.name.Name, int] = {}
        self._lock = threading.Lock()

    def handle(self, wire: bytes, peer: str, zone: Zone) -> UpdateResult:
        """The response to one UPDATE from `peer` (an address, for the audit history),
        with `zone` the snapshot served now (for the SOA serial). Never raises."""
        try:
            return self._handle(wire, peer, zone)
        except Exception:  # a bug must not stop the server: answer SERVFAIL, go on
            log.exception("internal error on an UPDATE from %s; answered SERVFAIL", peer)
            self._count("SERVFAIL")
            return UpdateResult(header_only(wire, Rcode.SERVFAIL))

    def _handle(self, wire: bytes, peer: str, zone: Zone) -> UpdateResult:
        if len(wire) < 12 or wire[2] & 0x80:
            return UpdateResult(None)
        try:
            request = dns.message.from_wire(wire, keyring=False)
        except _PARSE_ERRORS:
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
            return UpdateResult(_unsigned(request, Rcode.REFUSED))
        key_name = request.keyname
        tsig = _tsig_rdata(request)
        resolved = self.access.resolve_key(key_name)
        if resolved is None or resolved.key.algorithm != tsig.algorithm:
            return self._tsig_failure(request, peer, dns.rcode.BADKEY, "unknown key")
        try:
            verified = dns.message.from_wire(wire, keyring=resolved.key)
        except dns.tsig.BadSignature:
            return self._tsig_failure(request, peer, dns.rcode.BADSIG, "the MAC is wrong")
        except dns.tsig.BadTime:
            return self._bad_time(request, resolved, peer, "the time is out of range")
        except (dns.tsig.BadKey, dns.tsig.BadAlgorithm):
            return self._tsig_failure(request, peer, dns.rcode.BADKEY, "unknown key")
        except dns.tsig.PeerError:
            self._log(peer, key_name, "FORMERR", "a request carrying a TSIG error")
            return UpdateResult(_unsigned(request, Rcode.FORMERR))
        except _PARSE_ERRORS:
            self._log(peer, key_name, "FORMERR", "malformed")
            return UpdateResult(_unsigned(request, Rcode.FORMERR))
        if not self._fresh(key_name, tsig.time_signed):
            return self._bad_time(request, resolved, peer, "signed before an accepted update")
        return verified, resolved, key_name

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

    # -- TSIG --------------------------------------------------------------------------

    def _fresh(self, key_name: dns.name.Name, time_signed: int) -> bool:
        """False when `time_signed` is earlier than the latest accepted with this key
        (RFC 8945 5.2.3); otherwise it becomes the latest."""
        with self._lock:
            latest = self._latest.get(key_name)
            if latest is not None and time_signed < latest:
                return False
            self._latest[key_name] = time_signed
            return True

    def _tsig_failure(
        self, request: dns.message.Message, peer: str, error: int, reason: str
    ) -> UpdateResult:
        """NOTAUTH with TSIG error BADKEY or BADSIG, unsigned (RFC 8945 5.3.2)."""
        name = dns.rcode.to_text(Rcode.make(error), tsig=True)
        self._log(peer, request.keyname, name, reason, warn=True)
        tsig = _tsig_rdata(request)
        response = dns.message.make_response(request)  # `request` has no key: unsigned
        response.set_rcode(Rcode.NOTAUTH)
        response.tsig = dns.rrset.from_rdata(
            _key_name(request),
            0,
            tsig.replace(time_signed=int(time.time()), mac=b"", error=error, other=b""),
        )
        return UpdateResult(response.to_wire())

    def _bad_time(
        self, request: dns.message.Message, resolved: ResolvedKey, peer: str, reason: str
    ) -> UpdateResult:
        """NOTAUTH with TSIG error BADTIME, signed with the key over the request's MAC,
        Time Signed copied from the request, our time in Other Data (RFC 8945 5.2.3)."""
        self._log(peer, request.keyname, "BADTIME", reason, warn=True)
        tsig = _tsig_rdata(request)
        response = dns.message.make_response(request)
        response.set_rcode(Rcode.NOTAUTH)
        unsigned = response.to_wire()
        template = tsig.replace(
            mac=b"", error=dns.rcode.BADTIME, other=int(time.time()).to_bytes(6, "big")
        )
        signed, _ = dns.tsig.sign(  # type: ignore[no-untyped-call]
            unsigned, resolved.key, template, tsig.time_signed, tsig.mac
        )
        response.tsig = dns.rrset.from_rdata(_key_name(request), 0, signed)
        return UpdateResult(response.to_wire())

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
            logging.WARNING if warn else logging.INFO,
            "UPDATE from %s key %s: %s (%s)",
            peer,
            "-" if key_name is None else key_name.to_text(),
            outcome,
            reason,
        )


def _refused(error: ControparteError) -> Plan:
    """The plan for an error the service raised: its rcode from the table."""
    return Plan(Rcode.make(response_for(error).dns_rcode), reason=str(error))


def _tsig_rdata(message: dns.message.Message) -> dns.rdtypes.ANY.TSIG.TSIG:
    """The TSIG record of a signed message."""
    assert message.tsig is not None
    rdata = message.tsig[0]
    assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
    return rdata


def _key_name(message: dns.message.Message) -> dns.name.Name:
    """The owner of the TSIG record of a signed message: the key name."""
    assert message.tsig is not None
    return message.tsig.name


def _unsigned(request: dns.message.Message, rcode: Rcode) -> bytes:
    """A response without TSIG: `request` must have been read without a key."""
    response = dns.message.make_response(request)
    response.set_rcode(rcode)
    return response.to_wire()
