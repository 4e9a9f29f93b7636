"""TSIG on requests (RFC 8945), one verification for every handler that takes signed
requests: RFC 2136 UPDATE (`updater.py`) and zone transfers with the queries that go
with them (`transfer.py`). Synchronous and socket-free; the key lookup is injected.

What a server answers (RFC 8945 section 5.2 and 5.3.2), as `Rejected` responses:
- a key we do not have, or another algorithm than the key's: NOTAUTH with TSIG error
  BADKEY, unsigned (empty MAC);
- a MAC that does not verify: NOTAUTH with BADSIG, unsigned;
- Time Signed further than Fudge from our clock: NOTAUTH with BADTIME, signed with the
  key, Time Signed copied from the request and our time in Other Data (48 bits);
- with a replay guard, also a request already accepted (its very bytes again), or one
  signed earlier than the latest accepted with the same key (5.2.3): BADTIME as above;
- a request that itself carries a TSIG error: FORMERR, unsigned.
Otherwise the request is `Verified`: its message parsed with the key, so that
`dns.message.make_response` (or `sign_response`) signs the response over its MAC, and the
key with its role (`KeyRole`), which the caller checks against what the request asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig
from dns.rcode import Rcode

from controparte.service.access import ResolvedKey
from controparte.store import KeyRole

KeyResolver = Callable[[dns.name.Name], ResolvedKey | None]
"""The stored key of a name, decrypted (`Access.resolve_key`), or None."""

ReplayGuard = Callable[[dns.name.Name, int, int, bytes], bool]
"""(key name, Time Signed, Fudge, MAC) of a verified request -> whether it is fresh:
not accepted before, nor signed before the latest accepted with the key; a fresh one
is recorded as accepted (`Access.accept_signed`: in the store, so that the guard holds
across restarts, processes and nodes)."""

PARSE_ERRORS = (dns.exception.DNSException, ValueError, IndexError, UnicodeError)
"""What dnspython raises on a malformed message."""


@dataclass(frozen=True, slots=True)
class Verified:
    """A signed request whose TSIG verified: `message` was read with the key."""

    message: dns.message.Message
    key: ResolvedKey

    @property
    def name(self) -> dns.name.Name:
        return self.key.key.name

    @property
    def role(self) -> KeyRole:
        return self.key.role


@dataclass(frozen=True, slots=True)
class Rejected:
    """A signed request refused for its TSIG: the response to send, the outcome
    ("BADKEY", "BADSIG", "BADTIME" or "FORMERR"), why, and whether it deserves a
    warning (a TSIG failure does; a malformed request does not)."""

    response: bytes
    outcome: str
    reason: str
    warn: bool = True


class TsigVerifier:
    """Verifies signed requests with the keys `resolve` finds. Thread-safe.

    `replay` adds RFC 8945 5.2.3's rule against replays: a request already accepted, or
    signed earlier than the latest accepted with the same key, is BADTIME. It suits
    requests that change something (UPDATE); it does not suit zone transfers, which
    change nothing and whose secondaries may share a key and sign concurrently (a
    request signed a second before another could arrive after it and be refused)."""

    def __init__(self, resolve: KeyResolver, *, replay: ReplayGuard | None) -> None:
        self.resolve = resolve
        self.replay = replay

    def verify(self, request: dns.message.Message, wire: bytes) -> Verified | Rejected:
        """Verify `wire`, a request carrying a TSIG, that `request` is read without a
        key (`keyring=False`)."""
        tsig = tsig_rdata(request)
        resolved = self.resolve(key_name(request))
        if resolved is None or resolved.key.algorithm != tsig.algorithm:
            return _tsig_failure(request, dns.rcode.BADKEY, "unknown key")
        try:
            message = dns.message.from_wire(wire, keyring=resolved.key)
        except dns.tsig.BadSignature:
            return _tsig_failure(request, dns.rcode.BADSIG, "the MAC is wrong")
        except dns.tsig.BadTime:
            return _bad_time(request, resolved, "the time is out of range")
        except (dns.tsig.BadKey, dns.tsig.BadAlgorithm):
            return _tsig_failure(request, dns.rcode.BADKEY, "unknown key")
        except dns.tsig.PeerError:
            return Rejected(
                unsigned_response(request, Rcode.FORMERR),
                "FORMERR",
                "a request carrying a TSIG error",
                warn=False,
            )
        except PARSE_ERRORS:
            return Rejected(
                unsigned_response(request, Rcode.FORMERR), "FORMERR", "malformed", warn=False
            )
        if self.replay is not None and not self.replay(
            resolved.key.name, tsig.time_signed, tsig.fudge, tsig.mac
        ):
            return _bad_time(request, resolved, "a replay: accepted already, or signed earlier")
        return Verified(message, resolved)


def sign_response(response: dns.message.Message, verified: Verified) -> None:
    """Have `response` signed, when rendered, with the request's key over the request's
    MAC (what `make_response` does for a response it makes itself)."""
    response.use_tsig(verified.key.key)
    response.request_mac = verified.message.mac or b""


def tsig_rdata(message: dns.message.Message) -> dns.rdtypes.ANY.TSIG.TSIG:
    """The TSIG record of a signed message."""
    assert message.tsig is not None
    rdata = message.tsig[0]
    assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
    return rdata


def key_name(message: dns.message.Message) -> dns.name.Name:
    """The owner of the TSIG record of a signed message: the key name."""
    assert message.tsig is not None
    return message.tsig.name


def unsigned_response(request: dns.message.Message, rcode: Rcode) -> bytes:
    """A response without TSIG: `request` must have been read without a key."""
    response = dns.message.make_response(request)
    response.set_rcode(rcode)
    return response.to_wire()


def _tsig_failure(request: dns.message.Message, error: int, reason: str) -> Rejected:
    """NOTAUTH with TSIG error BADKEY or BADSIG, unsigned (RFC 8945 5.3.2)."""
    tsig = tsig_rdata(request)
    response = dns.message.make_response(request)  # `request` has no key: unsigned
    response.set_rcode(Rcode.NOTAUTH)
    response.tsig = dns.rrset.from_rdata(
        key_name(request),
        0,
        tsig.replace(time_signed=int(time.time()), mac=b"", error=error, other=b""),
    )
    return Rejected(response.to_wire(), dns.rcode.to_text(Rcode.make(error), tsig=True), reason)


def _bad_time(request: dns.message.Message, resolved: ResolvedKey, reason: str) -> Rejected:
    """NOTAUTH with TSIG error BADTIME, signed with the key over the request's MAC,
    Time Signed copied from the request, our time in Other Data (RFC 8945 5.2.3)."""
    tsig = tsig_rdata(request)
    response = dns.message.make_response(request)
    response.set_rcode(Rcode.NOTAUTH)
    unsigned = response.to_wire()
    template = tsig.replace(
        mac=b"", error=dns.rcode.BADTIME, other=int(time.time()).to_bytes(6, "big")
    )
    signed, _ = dns.tsig.sign(  # type: ignore[no-untyped-call]
        unsigned, resolved.key, template, tsig.time_signed, tsig.mac
    )
    response.tsig = dns.rrset.from_rdata(key_name(request), 0, signed)
    return Rejected(response.to_wire(), "BADTIME", reason)
