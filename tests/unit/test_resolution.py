"""The resolution judge (pure): what this machine's resolver and each name server said,
against the registry, to a status, a reason with its evidence, and the fix. One row per
situation support meets: the table states the status and words the reason and the fix
must contain (the machine or server at fault, the serial, the wait)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from controparte.agent.evidence import Status
from controparte.agent.resolution import SYSTEM, Lookup, Outcome, judge_resolution

FQDN = "studio.zone.example.test"
ZONE = "zone.example.test"
NOW = ("203.0.113.6",)
OLD = ("203.0.113.99",)
A = Outcome.ANSWER

SYSTEM_OK = Lookup(SYSTEM, A, NOW, A, 8443)
NS1 = Lookup("ns1 (192.0.2.53:53)", A, NOW, A, 8443, serial=7, ttl=300, negative_ttl=60)
NS2 = replace(NS1, via="ns2 (198.51.100.53:53)")
NS2_BEHIND = replace(NS2, addresses=OLD, serial=6)
NS_NXDOMAIN = Lookup("ns1 (192.0.2.53:53)", Outcome.NXDOMAIN, text="NXDOMAIN", serial=7)
NS_TIMEOUT = Lookup("ns2 (198.51.100.53:53)", Outcome.TIMEOUT, text="no answer in 2 s")


def failing(outcome: Outcome) -> Lookup:
    return Lookup(SYSTEM, outcome, (), outcome, None, text=f"said {outcome.value}")


@dataclass(frozen=True)
class Case:
    system: Lookup
    servers: tuple[Lookup, ...]
    status: Status
    reason: tuple[str, ...]  # words the reason must contain
    fix: tuple[str, ...]  # words the fix must contain
    registry: tuple[str, ...] = NOW
    port: int | None = 8443


CASES = {
    "everything agrees": Case(
        SYSTEM_OK,
        (NS1, NS2),
        Status.PASSED,
        ("resolves studio.zone.example.test to 203.0.113.6, port 8443", "serial 7"),
        (),
    ),
    "resolver NXDOMAIN, servers have it: delegation or negative cache": Case(
        failing(Outcome.NXDOMAIN),
        (NS1,),
        Status.FAILED,
        ("cannot resolve", "nxdomain", "delegation of zone.example.test", "negative answer"),
        ("wait 60 s (the zone's negative TTL)", "dig +trace", "ns1 (192.0.2.53:53)"),
    ),
    "resolver SERVFAIL, servers answer: resolver, upstream or delegation": Case(
        failing(Outcome.SERVFAIL),
        (NS1, NS2),
        Status.FAILED,
        ("servfail", "resolver or its upstream", "ns1 (192.0.2.53:53) (serial 7)"),
        ("/etc/resolv.conf", "dig +trace"),
    ),
    "resolver and servers time out": Case(
        failing(Outcome.TIMEOUT),
        (NS_TIMEOUT,),
        Status.FAILED,
        ("do not answer either", "ns2 (198.51.100.53:53): timeout"),
        ("down or unreachable", "ns2 (198.51.100.53:53)", "port 53"),
    ),
    "nobody has the name, the registry has an address": Case(
        failing(Outcome.NXDOMAIN),
        (NS_NXDOMAIN,),
        Status.FAILED,
        ("no address for it either", "serial 7", "registry holds 203.0.113.6"),
        ("SOA serial", "zone transfers"),
    ),
    "nobody has the name, nor the registry": Case(
        failing(Outcome.NXDOMAIN),
        (NS_NXDOMAIN,),
        Status.FAILED,
        ("registry holds no address",),
        ("controparte agent",),
        registry=(),
        port=None,
    ),
    "old address, a secondary behind": Case(
        replace(SYSTEM_OK, addresses=OLD),
        (NS1, NS2_BEHIND),
        Status.FAILED,
        (
            "DNS still serves the old address",
            "MxServer would dial the old address",
            "A secondary is behind: ns2 (198.51.100.53:53) (serial 6): 203.0.113.99",
            "ns1 (192.0.2.53:53) (serial 7)",
        ),
        ("wait up to 300 s", "serial 7", "check the secondaries: ns2 (198.51.100.53:53)"),
    ),
    "old address, every server current: a cache": Case(
        replace(SYSTEM_OK, addresses=OLD),
        (NS1, NS2),
        Status.FAILED,
        ("DNS still serves the old address", "a cache is behind", "300 s"),
        ("wait up to 300 s", "flush"),
    ),
    "old address everywhere: DNS does not publish the change": Case(
        replace(SYSTEM_OK, addresses=OLD),
        (replace(NS1, addresses=OLD),),
        Status.FAILED,
        ("DNS still serves the old address", "does not publish the registry's change"),
        ("SOA serial",),
    ),
    "old address, servers silent": Case(
        replace(SYSTEM_OK, addresses=OLD),
        (NS_TIMEOUT,),
        Status.FAILED,
        ("DNS still serves the old address", "cannot tell"),
        ("wait up to the records' TTL", "secondaries"),
    ),
    "old port": Case(
        replace(SYSTEM_OK, port=443),
        (NS1,),
        Status.FAILED,
        ("DNS still serves the old port", "port 443", "port 8443"),
        ("wait up to 300 s",),
    ),
    "addresses but the SRV times out": Case(
        replace(SYSTEM_OK, port_outcome=Outcome.TIMEOUT, port=None, text="timed out"),
        (NS1,),
        Status.FAILED,
        ("cannot learn its port", "timeout"),
        ("_mxserver._tcp.studio.zone.example.test SRV",),
    ),
    "right here, one server silent": Case(
        SYSTEM_OK,
        (NS1, NS_TIMEOUT),
        Status.WARNING,
        ("not every name server agrees", "ns2 (198.51.100.53:53): timeout"),
        ("check the name servers",),
    ),
    "right here, a secondary behind": Case(
        SYSTEM_OK,
        (NS1, NS2_BEHIND),
        Status.WARNING,
        ("ns2 (198.51.100.53:53) (serial 6): 203.0.113.99, port 8443, behind serial 7",),
        ("serial",),
    ),
    "right here (a cache or /etc/hosts), the servers say NXDOMAIN": Case(
        SYSTEM_OK,
        (NS_NXDOMAIN,),
        Status.WARNING,
        ("ns1 (192.0.2.53:53) (serial 7): nxdomain",),
        ("check the name servers",),
    ),
    "right here, no server asked": Case(
        SYSTEM_OK, (), Status.WARNING, ("were not asked",), ("dig zone.example.test NS",)
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_judge(case: Case) -> None:
    verdict = judge_resolution(
        FQDN + ".",
        ZONE,
        case.system,
        case.servers,
        registry_addresses=case.registry,
        registry_port=case.port,
    )
    assert verdict.status is case.status, verdict.reason
    for words in case.reason:
        assert words in verdict.reason, (words, verdict.reason)
    if case.status is Status.PASSED:
        assert verdict.fix is None
    else:
        assert verdict.fix is not None
        for words in case.fix:
            assert words in verdict.fix, (words, verdict.fix)
    # What MxServer would dial is what this machine's resolver gave.
    assert (verdict.addresses, verdict.port) == (case.system.addresses, case.system.port)
    assert verdict.evidence == (
        case.system.describe(),
        *(server.describe() for server in case.servers),
    )


def test_addresses_are_compared_in_one_form() -> None:
    system = Lookup(SYSTEM, A, ("192.0.2.1", "2001:db8::1"), A, 8443)
    verdict = judge_resolution(
        FQDN,
        ZONE,
        system,
        [replace(NS1, addresses=system.addresses)],
        registry_addresses=["2001:0db8:0::1", "192.0.2.1"],
        registry_port=8443,
    )
    assert verdict.status is Status.PASSED


@pytest.mark.parametrize(
    ("lookup", "line"),
    [
        (NS1, "ns1 (192.0.2.53:53) (serial 7): 203.0.113.6, port 8443"),
        (replace(NS1, port=None, port_outcome=Outcome.NXDOMAIN), "port none (no SRV record)"),
        (replace(NS1, port=None, port_outcome=Outcome.TIMEOUT), "port unknown (SRV: timeout)"),
        (NS_TIMEOUT, "ns2 (198.51.100.53:53): timeout: no answer in 2 s"),
    ],
)
def test_each_source_is_one_line_of_evidence(lookup: Lookup, line: str) -> None:
    assert line in lookup.describe()
