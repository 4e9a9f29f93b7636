"""`controparte doctor` is never confidently wrong: one network-namespace scenario per
situation that support meets, each with the verdict expected, the check that carries it,
the machine and port its fix must blame, and what the fix must not say (see conftest.py
for the world). Each was a wrong verdict or a wrong fix before (issue 10):

    situation                                          verdict    blamed
    one start-live host down                           warning    the service's operator
    the counterpart's name does not resolve here       failed     DNS (this machine's resolver)
    the counterpart's port forward missing             failed     its router, MxServer's 8000
    the counterpart's heartbeats stopped               failed     its agent (named first)
    DNS serves the old address (a copy behind)         failed     DNS (named before firewalls)
    the counterpart's agent cannot test its egress     untested   the command to run there
    inbound admits only the counterpart                passed     nothing (the probe not let in)
    remote access run on the server                    untested   a client, with --role client
    this machine's egress drops the flow               failed     this machine's egress only
    the counterpart's inbound drops the flow           failed     its side only
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.netns.conftest import (
    CALLEE,
    CALLEE_ADDRESS,
    LIVE,
    SERVICE,
    DoctorRun,
    Site,
    World,
)

pytestmark = pytest.mark.integration

B = CALLEE[0]
L = LIVE[0]
EGRESS_TO_B_DROPPED = f"""\
table inet site {{
  chain egress {{
    type filter hook output priority filter; policy accept;
    ip daddr {CALLEE_ADDRESS} tcp dport 8443 ct state new drop comment "the site drops 8443 out"
  }}
}}
"""
B_INBOUND_DROPPED = """\
table inet site {
  chain inbound {
    type filter hook input priority filter; policy accept;
    tcp dport 8000 ct state new drop comment "studio-b's firewall drops MxServer's port"
  }
}
"""
START_LIVE01_DOWN = """\
table inet site {
  chain inbound {
    type filter hook input priority filter; policy accept;
    ip daddr 198.51.100.19 tcp dport 443 drop comment "start-live01 is down"
  }
}
"""
ONLY_THE_COUNTERPART_IN = f"""\
table inet filter {{
  chain input {{
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iif lo accept
    ip saddr {CALLEE_ADDRESS} tcp dport 8000 ct state new accept comment "controparte einvoice: inbound studio-b (B1)"
  }}
}}
"""  # noqa: E501  (the rule as `controparte firewall` writes it, without the probe source)


@dataclass(frozen=True)
class Case:
    """One situation: `setup` makes it (returns the caller's code and doctor's `--to`,
    `--feature` and extra arguments); the verdict expected on check `check` (`{code}`
    is the caller's), the exit status, what the fix (or the reason, `where`) must and
    must not contain, and the first check the summary must name."""

    name: str
    setup: Callable[[Site], tuple[str, str, str, tuple[str, ...]]]
    check: str
    status: str
    exit_code: int
    blames: tuple[str, ...]
    not_blames: tuple[str, ...] = ()
    where: str = "fix"
    first: str | None = None
    tested_from: tuple[str, ...] | None = None


def _serving(site: Site, slug: str) -> str:
    """A caller on public 8443 forwarded to its MxServer port 8000, where the agent
    listens (proving probes), linked to studio-b for einvoice."""
    code = site.caller(slug, port=8443, private_port=8000, forward=True, listen_on=8000)
    site.world.link(code, B, "einvoice")
    return code


def start_live_host_down(site: Site) -> tuple[str, str, str, tuple[str, ...]]:
    world = site.world
    code = site.caller("sl01", port=9443, private_port=8000, forward=True, listen_on=8000)
    world.link(code, L, "einvoice")
    site.nft("sl", START_LIVE01_DOWN)
    return code, "live-l", "einvoice", ()


def name_does_not_resolve(site: Site) -> tuple[str, str, str, tuple[str, ...]]:
    code = _serving(site, "nodns")
    site.resolver("198.51.100.99")  # no resolver there
    return code, "studio-b", "einvoice", ()


def counterpart_forward_missing(site: Site) -> tuple[str, str, str, tuple[str, ...]]:
    code = _serving(site, "theirfwd")
    site.flush("b")  # studio-b's router loses its port forward 8443 -> 8000
    return code, "studio-b", "einvoice", ()


def counterpart_stale(site: Site) -> tuple[str, str, str, tuple[str, ...]]:
    world = site.world
    code = _serving(site, "stale")
    world.add("C-STALE", "gone-c")
    world.heartbeat("b", "C-STALE", 7443, 7000)  # nothing was ever forwarded on 7443
    world.link(code, "C-STALE", "einvoice")
    world.last_seen_ago("C-STALE", 7200)
    return code, "gone-c", "einvoice", ()


def dns_behind(site: Site) -> tuple[str, str, str, tuple[str, ...]]:
    world = site.world
    code = _serving(site, "behind")
    world.add("D-MOVED", "moved-d", ipv4="203.0.113.77", port=8443)
    world.link(code, "D-MOVED", "einvoice")
    site.old_zone_copy()  # the copy serves 203.0.113.77, where nothing answers
    world.operator("installation", "update", "D-MOVED", "--ip", CALLEE_ADDRESS)
    return code, "moved-d", "einvoice", ()


def counterpart_agent_absent(site: Site) -> tuple[str, str, str, tuple[str, ...]]:
    world = site.world
    code = _serving(site, "mute")
    world.add("E-MUTE", "mute-e")
    world.heartbeat("b", "E-MUTE", 8443, 8000)  # the same server as studio-b, no agent running
    world.link(code, "E-MUTE", "einvoice")
    return code, "mute-e", "einvoice", ()


def inbound_only_the_counterpart(site: Site) -> tuple[str, str, str, tuple[str, ...]]:
    code = _serving(site, "restrict")
    site.nft("a", ONLY_THE_COUNTERPART_IN)
    return code, "studio-b", "einvoice", ()


def remote_access_on_the_server(site: Site) -> tuple[str, str, str, tuple[str, ...]]:
    world = site.world
    code = site.caller("rasrv", port=9443, private_port=8000, forward=True, listen_on=8000)
    world.link(code, L, "remote-access")
    return code, "live-l", "remote-access", ()


def egress_dropped_here(site: Site) -> tuple[str, str, str, tuple[str, ...]]:
    code = _serving(site, "egress")
    site.nft("a", EGRESS_TO_B_DROPPED)
    return code, "studio-b", "einvoice", ()


def inbound_dropped_there(site: Site) -> tuple[str, str, str, tuple[str, ...]]:
    code = _serving(site, "theirfw")
    site.nft("b", B_INBOUND_DROPPED)
    return code, "studio-b", "einvoice", ()


CASES = [
    Case(
        "one start-live host down",
        start_live_host_down,
        "start-live:{code}->start-live01.example.test",
        "warning",
        0,
        ("tell the service's operator", "start-live01.example.test"),
        ("egress",),
    ),
    Case(
        "the name does not resolve",
        name_does_not_resolve,
        f"dns:{B}",
        "failed",
        1,
        ("resolver",),
        ("port forward", "egress"),
        first=f"dns:{B}",
    ),
    Case(
        "the counterpart's port forward is missing",
        counterpart_forward_missing,
        "outbound:{code}->" + B,
        "failed",
        1,
        ("studio-b's router: public 8443 -> MxServer's port 8000",),
        ("egress",),
        tested_from=("here", "service"),
    ),
    Case(
        "the counterpart's heartbeats stopped",
        counterpart_stale,
        "record:C-STALE",
        "failed",
        1,
        ("agent",),
        ("port forward",),
        first="record:C-STALE",
    ),
    Case(
        "DNS serves the old address",
        dns_behind,
        "dns:D-MOVED",
        "failed",
        1,
        ("203.0.113.77", "behind"),
        ("egress", "port forward"),
        where="reason",
        first="dns:D-MOVED",
    ),
    Case(
        "the counterpart's agent cannot test its egress",
        counterpart_agent_absent,
        "return:E-MUTE->{code}",
        "untested",
        3,
        ("--from E-MUTE",),
        tested_from=("service",),
    ),
    Case(
        "inbound admits only the counterpart",
        inbound_only_the_counterpart,
        f"return:{B}->{{code}}",
        "passed",
        0,
        ("admit", SERVICE),
        ("port forward",),
        where="reason",
        tested_from=("counterpart-agent",),
    ),
    Case(
        "remote access run on the server",
        remote_access_on_the_server,
        "outbound:{code}->" + L,
        "untested",
        3,
        ("--role client", "an iDesk client"),
    ),
    Case(
        "this machine's egress drops the flow",
        egress_dropped_here,
        "outbound:{code}->" + B,
        "failed",
        1,
        ("open egress tcp 8443 on shop-egress's firewall",),
        ("port forward", "studio-b's side"),
        tested_from=("here", "service"),
    ),
    Case(
        "the counterpart's inbound drops the flow",
        inbound_dropped_there,
        "outbound:{code}->" + B,
        "failed",
        1,
        ("on studio-b's side", "MxServer's port 8000"),
        ("open egress",),
        tested_from=("here", "service"),
    ),
]


def _find(run: DoctorRun, check_id: str) -> dict[str, object]:
    (check,) = run.checks
    found = [c for key in ("steps", "flows") for c in check[key] if c["id"] == check_id]  # type: ignore[attr-defined]
    assert found, f"no check {check_id} in {run.report}"
    return found[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_doctor_names_the_right_machine_and_port(case: Case, site: Site) -> None:
    code, to, feature, extra = case.setup(site)
    run = site.doctor(code, to, feature, *extra)
    found = _find(run, case.check.format(code=code))
    assert found["status"] == case.status, run.report
    assert run.exit_code == case.exit_code, run.report
    assert run.report["exit_code"] == case.exit_code
    text = str(found[case.where])
    for words in case.blames:
        assert words in text, (words, found)
    for words in case.not_blames:
        assert words not in text, (words, found)
    if case.first is not None:
        (check,) = run.checks
        assert check["first"] == case.first, run.report
        assert "first fix" in str(run.report["summary"]), run.report
    if case.tested_from is not None:
        assert tuple(found["tested_from"]) == case.tested_from, found  # type: ignore[arg-type]


def test_the_service_dials_the_counterpart_only_when_linked(site: Site) -> None:
    """Item 7's abuse guard, end to end: an unlinked counterpart is not probed, and the
    fix then says which two places it could be instead of guessing one."""
    code = site.caller("unlinked", port=8443, private_port=8000, forward=True, listen_on=8000)
    site.nft("a", EGRESS_TO_B_DROPPED)
    run = site.doctor(code, "studio-b", "einvoice")
    found = _find(run, f"outbound:{code}->{B}")
    assert found["status"] == "failed"
    assert "either this side's egress or studio-b's inbound" in str(found["fix"])
    tests = found["tests"]
    assert [(t["from"], t["result"]) for t in tests] == [  # type: ignore[attr-defined]
        ("here", "timeout"),
        ("service", None),  # not made: not linked
    ]
    assert "not linked" in str(tests[1]["detail"])  # type: ignore[index]


def test_firewall_rules_let_the_probe_in(site: Site, world: World) -> None:
    """Item 8: the rules `controparte firewall` writes admit the service's probe as well
    as the counterpart, so the probe and the relay both get through them."""
    code = _serving(site, "fwrules")
    script = world.operator("firewall", code, "--format", "nftables")
    assert f"ip saddr {{ {SERVICE} }} tcp dport 8000" in script
    rules = "\n".join(line for line in script.splitlines() if line.startswith("add rule"))
    site.nft(
        "a",
        "table inet filter {\n chain input { type filter hook input priority filter;"
        " policy drop; ct state established,related accept; iif lo accept; }\n"
        " chain output { type filter hook output priority filter; policy accept; }\n}\n"
        + rules
        + "\n",
    )
    run = site.doctor(code, "studio-b", "einvoice")
    found = _find(run, f"return:{B}->{code}")
    assert found["status"] == "passed", run.report
    probe = [t for t in found["tests"] if t["from"] == "service"]  # type: ignore[attr-defined]
    assert probe and probe[0]["result"] == "open", found
    assert run.exit_code == 0, run.report


def test_a_forward_to_a_second_machine_is_named_with_both_ports(site: Site) -> None:
    """Item 4: a counterpart whose public and MxServer ports differ is blamed on the
    ports as registered (here studio-b's 8443 -> 8000), in the plan and the fix."""
    code = _serving(site, "ports")
    run = site.doctor(code, "studio-b", "einvoice")
    (check,) = run.checks
    assert check["callee"]["private_port"] == 8000  # type: ignore[index]
    assert check["callee"]["port"] == 8443  # type: ignore[index]
