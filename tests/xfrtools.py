"""Zone transfer as a client sees it, with dnspython as the oracle: a transfer's messages
read and applied by `dns.xfr.Inbound` (what `dns.query.inbound_xfr` does over a socket:
TSIG checked message by message, chained; SOA first and last; for IXFR, the base serial
and every deleted record must exist), and zones as sets of records to compare."""

from __future__ import annotations

from collections.abc import Iterable

import dns.message
import dns.name
import dns.rdatatype
import dns.xfr
import dns.zone

from controparte.dns.zone import Zone

Rec = tuple[str, int, str, str]
"""(owner, TTL, type, data) as text, names absolute and lower-case."""


def receive(
    messages: Iterable[bytes], query: dns.message.Message, target: dns.zone.Zone
) -> list[dns.message.Message]:
    """Apply the response `messages` to `query` (made by `dns.xfr.make_query` for
    `target`) to `target`, as `dns.query.inbound_xfr` does; the messages as read.
    Raises what dnspython raises for a transfer it refuses."""
    rdtype = query.question[0].rdtype
    serial = dns.xfr.extract_serial_from_query(query)
    read: list[dns.message.Message] = []
    done = False
    with dns.xfr.Inbound(target, rdtype, serial) as inbound:
        ctx = None
        for wire in messages:
            assert not done, "messages after the transfer's end"
            message = dns.message.from_wire(
                wire,
                keyring=query.keyring,
                request_mac=query.mac,
                xfr=True,
                origin=target.from_wire_origin(),
                tsig_ctx=ctx,
                multi=True,
                one_rr_per_rrset=rdtype == dns.rdatatype.IXFR,
            )
            assert query.is_response(message, xfr_continuation=bool(read))
            done = inbound.process_message(message)
            ctx = message.tsig_ctx
            read.append(message)
    assert done, "the transfer did not end"
    return read


def zone_records(zone: dns.zone.Zone) -> set[Rec]:
    """Every record of a dnspython zone."""
    origin = zone.origin
    assert origin is not None
    return {
        (
            name.derelativize(origin).to_text().lower(),
            ttl,
            dns.rdatatype.to_text(rdata.rdtype),
            rdata.to_text(origin=origin, relativize=False).lower(),
        )
        for name, ttl, rdata in zone.iterate_rdatas()
    }


def snapshot_records(zone: Zone) -> set[Rec]:
    """Every record `Zone.rrsets` lists: what a transfer of the snapshot must carry."""
    return {
        (
            rrset.name.to_text().lower(),
            rrset.ttl,
            dns.rdatatype.to_text(rrset.rdtype),
            rdata.to_text().lower(),
        )
        for rrset in zone.rrsets()
        for rdata in rrset.rdatas
    }


def axfr_query(origin: dns.name.Name | str, keyring: object = None) -> dns.message.Message:
    """An AXFR query for `origin`, signed with the `dns.tsig.Key` `keyring` if given."""
    query, _ = dns.xfr.make_query(dns.zone.Zone(origin), serial=None, keyring=keyring)
    return query
