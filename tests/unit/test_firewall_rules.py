"""The firewall renderers (`plan/firewall.py`) over every seed feature, every Live
combination, IPv4/IPv6/unknown addresses and differing private ports, with and without
the rules that admit the service's probe: nftables output is checked by `nft -c`
itself, iptables and Windows lines for their form."""

from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
from itertools import product
from pathlib import Path

import pytest

from controparte.plan.catalog import load_catalog
from controparte.plan.firewall import (
    FORMATS,
    NFT_COMMENT_MAX,
    PROBE_COMMENT,
    probe_admissions,
    render_many,
    render_rules,
)
from controparte.plan.planner import Action, Initiator, Party, Plan, Role, Rule, plan
from tests.debtools import tool

CATALOG = load_catalog()

NFT_TABLES = """\
table inet filter {
  chain input { type filter hook input priority 0; policy accept; }
  chain output { type filter hook output priority 0; policy accept; }
}
table ip nat {
  chain prerouting { type nat hook prerouting priority -100; policy accept; }
}
"""

ADDRESSES = [(), ("203.0.113.10",), ("2001:db8::10",), ("203.0.113.10", "2001:db8::10")]


def every_plan() -> list[Plan]:
    """Every feature x Live combination x address shape, public port != private port
    on one end and equal on the other, and a very long code (comment limits)."""
    plans = []
    for feature, caller_live, callee_live, addresses in product(
        sorted(CATALOG.features), (False, True), (False, True), ADDRESSES
    ):
        caller = Party("AZIENDA-" + "X" * 56, "azienda", caller_live, addresses, 9443, 4443)
        callee = Party("ST-2", "studio", callee_live, ("198.51.100.20",), 9102, None)
        plans.append(plan(caller, callee, CATALOG.feature(feature), CATALOG))
    return plans


PROBE_SOURCES = ("192.0.2.53", "2001:db8:53::1")


def scripts(fmt: str) -> list[str]:
    """Each side of every plan, without and with the probe's admissions."""
    out = []
    for p in every_plan():
        for side in Role:
            out.append(render_rules(p, side, fmt))
            rules = p.rules_for(side)
            probe = probe_admissions(rules, PROBE_SOURCES)
            out.append(render_many(["with the probe"], [(p, rules)], fmt, probe))
    return out


def rule_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line and not line.startswith("#")]


def every_rule(fmt: str) -> list[str]:
    """The rule lines of every plan's scripts in `fmt`, both sides; there are some."""
    lines = rule_lines("".join(scripts(fmt)))
    assert lines
    return lines


# -- nftables ------------------------------------------------------------------------------


def nft_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "check.nft"
    path.write_text(NFT_TABLES + text)
    return subprocess.run(
        ["nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )


@pytest.fixture
def nft(tmp_path: Path) -> None:
    """`nft` can check a file here: it needs CAP_NET_ADMIN even to check, which `make
    test` cannot give (a missing `nft` fails: `make test` installs it)."""
    tool("nft")
    probe = nft_check(tmp_path, "")
    if probe.returncode != 0:
        pytest.skip(f"nft -c cannot check files here: {probe.stderr.strip()}")


@pytest.mark.usefixtures("nft")
def test_nft_accepts_every_rendered_rule(tmp_path: Path) -> None:
    text = "".join(scripts("nftables"))
    assert "add rule" in text and "redirect to :4443" in text
    probe = "ip6 saddr { 2001:db8:53::1 } tcp dport 4443 ct state new accept comment"
    assert f'{probe} "{PROBE_COMMENT}"' in text
    result = nft_check(tmp_path, text)
    assert result.returncode == 0, result.stderr


@pytest.mark.usefixtures("nft")
def test_nft_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The check is real: nft does reject what is wrong."""
    result = nft_check(tmp_path, "add rule inet filter output tcp dport 9999-9000 accept\n")
    assert result.returncode != 0


def test_nft_comments_stay_within_the_limit() -> None:
    for line in every_rule("nftables"):
        comment = re.search(r'comment "([^"]*)"$', line)
        assert comment is not None, line
        assert len(comment.group(1)) <= NFT_COMMENT_MAX


def test_nft_addresses_match_their_family() -> None:
    for line in every_rule("nftables"):
        for family, addresses in re.findall(r"(ip6?) [sd]addr \{ ([^}]*) \}", line):
            for address in addresses.split(", "):
                version = ipaddress.ip_address(address).version
                assert (family == "ip6") == (version == 6), line


# -- iptables and Windows -------------------------------------------------------------------

FORMS = {  # every line a script may hold, by format
    "iptables": (
        re.compile(
            r"ip6?tables -A (INPUT|OUTPUT) -p tcp (-[sd] \S+ )?--dport \d+(:\d+)? -m conntrack"
            r" --ctstate NEW -m comment --comment .+ -j ACCEPT"
        ),
        re.compile(
            r"ip6?tables -t nat -A PREROUTING -p tcp --dport \d+ -m comment --comment .+"
            r" -j REDIRECT --to-ports \d+"
        ),
    ),
    "windows": (
        re.compile(
            r'New-NetFirewallRule -DisplayName "controparte [^"]+" -Direction (Inbound|Outbound)'
            r" -Protocol TCP( -RemoteAddress [0-9a-f.:,]+)? -(Local|Remote)Port \d+(-\d+)?"
            r" -Action Allow"
        ),
        re.compile(
            r"netsh interface portproxy add v4tov4 listenport=\d+ connectport=\d+"
            r" connectaddress=127\.0\.0\.1"
        ),
    ),
}


@pytest.mark.parametrize("fmt", sorted(FORMS))
def test_every_line_has_a_known_form(fmt: str) -> None:
    for line in every_rule(fmt):
        assert any(form.fullmatch(line) for form in FORMS[fmt]), line


def test_iptables_lines_name_their_family_ports_and_comment() -> None:
    for line in every_rule("iptables"):
        words = shlex.split(line)  # quotes balance
        tool = words[0]
        if "-j REDIRECT" in line:
            assert tool == "iptables", "IPv6 needs no port forward"
        for flag in ("-s", "-d"):
            if flag in words:
                for address in words[words.index(flag) + 1].split(","):
                    version = ipaddress.ip_address(address).version
                    assert (tool == "ip6tables") == (version == 6), line
        low, _, high = words[words.index("--dport") + 1].partition(":")
        assert 1 <= int(low) <= int(high or low) <= 65535
        comment = words[words.index("--comment") + 1]
        assert comment.startswith("controparte ") and len(comment) <= 256


def test_iptables_names_both_families_when_the_peer_is_unknown() -> None:
    caller = Party("A-1", "a", False, (), 4443, None)
    callee = Party("B-2", "b", True, (), 9102, None)
    text = render_rules(
        plan(caller, callee, CATALOG.feature("einvoice"), CATALOG), Role.CALLER, "iptables"
    )
    lines = rule_lines(text)
    assert any(line.startswith("iptables ") and "--dport 9000:9999" in line for line in lines)
    assert any(line.startswith("ip6tables ") and "--dport 9000:9999" in line for line in lines)


def test_windows_rules_name_the_port_of_their_direction() -> None:
    for line in every_rule("windows"):
        if "-Direction Inbound" in line:
            assert "-LocalPort" in line
        if "-Direction Outbound" in line:
            assert "-RemotePort" in line


# -- what the scripts say --------------------------------------------------------------------


def test_the_script_names_the_feature_the_side_and_what_is_blocked() -> None:
    caller = Party("AZ-1", "azienda", False, ("203.0.113.10",), 4443, None)
    callee = Party("ST-2", "studio", True, ("198.51.100.20",), 9102, None)
    p = plan(caller, callee, CATALOG.feature("primanota"), CATALOG)
    text = render_rules(p, Role.CALLER, "nftables")
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header[0] == "# controparte: primanota (Prima nota transmission (company to accountant))"
    assert "rules for the caller, azienda (AZ-1)" in header[1]
    assert any(line.startswith("# BLOCKED primanota return") and "Fix:" in line for line in header)
    assert rule_lines(text) == [
        "add rule inet filter output ip daddr { 198.51.100.20 } tcp dport 9000-9999"
        ' ct state new accept comment "controparte primanota: egress studio (ST-2)"',
        *(
            f"add rule inet filter output tcp dport 443 ct state new accept"
            f' comment "controparte primanota: egress {host}"'
            for host in CATALOG.live.start_live_hosts
        ),
        "add rule inet filter input ip saddr { 198.51.100.20 } tcp dport 4443"
        ' ct state new accept comment "controparte primanota: inbound studio (ST-2)"',
    ]
    assert rule_lines(render_rules(p, Role.CALLEE, "nftables")) == []
    assert "# nothing to allow on this side" in render_rules(p, Role.CALLEE, "nftables")


def test_a_rule_several_features_need_is_written_once() -> None:
    caller = Party("AZ-1", "azienda", False, ("203.0.113.10",), 9443, 4443)
    callee = Party("ST-2", "studio", False, ("198.51.100.20",), 9102, None)
    parts = []
    for feature in ("einvoice", "realtime"):
        p = plan(caller, callee, CATALOG.feature(feature), CATALOG)
        parts.append((p, p.rules_for(Role.CALLER)))
    text = render_many(["header"], parts, "nftables")
    lines = rule_lines(text)
    assert len(lines) == len(set(lines))
    egress = [line for line in lines if "output" in line]
    assert egress == [
        "add rule inet filter output ip daddr { 198.51.100.20 } tcp dport 9102 ct state new"
        ' accept comment "controparte einvoice,realtime: egress studio (ST-2)"'
    ]
    assert "redirect to :4443" in text
    assert text.startswith("# header\n")


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_format_is_refused(fmt: str) -> None:
    p = every_plan()[0]
    assert render_rules(p, Role.CALLER, fmt)
    with pytest.raises(ValueError, match="unknown firewall format"):
        render_rules(p, Role.CALLER, fmt + "x")


# -- the service's probe ------------------------------------------------------------------------


def inbound(
    peers: tuple[str, ...], low: int, high: int | None = None, side: Role = Role.CALLEE
) -> Rule:
    return Rule(side, Action.INBOUND, Initiator.SERVER, peers, "peer", low, high or low)


def egress(peers: tuple[str, ...], port: int) -> Rule:
    return Rule(Role.CALLEE, Action.EGRESS, Initiator.SERVER, peers, "peer", port, port)


@pytest.mark.parametrize(
    ("rules", "sources", "ports"),
    [
        ([inbound(("198.51.100.30",), 4443)], PROBE_SOURCES, [(4443, 4443)]),
        ([inbound(("198.51.100.30",), 4443)], (), []),  # nothing to admit it from
        ([inbound((), 4443)], PROBE_SOURCES, []),  # open to anyone: the probe gets in
        ([egress(("198.51.100.30",), 4443)], PROBE_SOURCES, []),  # not inbound
        (
            [
                inbound(("198.51.100.30",), 4443),
                inbound(("203.0.113.9", "2001:db8::9"), 4443),  # same port: once
                inbound(("203.0.113.9",), 9000, 9999),
            ],
            ("192.0.2.53",),
            [(4443, 4443), (9000, 9999)],
        ),
    ],
)
def test_probe_admissions(
    rules: list[Rule], sources: tuple[str, ...], ports: list[tuple[int, int]]
) -> None:
    found = probe_admissions(rules, sources)
    assert [(r.port_low, r.port_high) for r in found] == ports
    for rule in found:
        assert (rule.action, rule.side, rule.peer_addresses) == (
            Action.INBOUND,
            Role.CALLEE,
            sources,
        )


@pytest.mark.parametrize(
    ("fmt", "lines"),
    [
        (
            "nftables",
            [
                "add rule inet filter input ip saddr { 192.0.2.53 } tcp dport 4443 ct state"
                f' new accept comment "{PROBE_COMMENT}"',
                "add rule inet filter input ip6 saddr { 2001:db8:53::1 } tcp dport 4443 ct"
                f' state new accept comment "{PROBE_COMMENT}"',
            ],
        ),
        (
            "iptables",
            [
                "iptables -A INPUT -p tcp -s 192.0.2.53 --dport 4443 -m conntrack --ctstate NEW"
                f' -m comment --comment "{PROBE_COMMENT}" -j ACCEPT',
                "ip6tables -A INPUT -p tcp -s 2001:db8:53::1 --dport 4443 -m conntrack"
                f' --ctstate NEW -m comment --comment "{PROBE_COMMENT}" -j ACCEPT',
            ],
        ),
        (
            "windows",
            [
                f'New-NetFirewallRule -DisplayName "{PROBE_COMMENT}" -Direction Inbound'
                " -Protocol TCP -RemoteAddress 192.0.2.53,2001:db8:53::1 -LocalPort 4443"
                " -Action Allow"
            ],
        ),
    ],
)
def test_the_probe_is_admitted_after_the_counterparts_on_the_same_port(
    fmt: str, lines: list[str]
) -> None:
    caller = Party("ST-2", "studio", False, ("198.51.100.20",), 9102, None)
    callee = Party("AZ-1", "azienda", False, ("203.0.113.10",), 4443, None)
    p = plan(caller, callee, CATALOG.feature("einvoice"), CATALOG)
    rules = p.rules_for(Role.CALLEE)
    without = rule_lines(render_many(["h"], [(p, rules)], fmt))
    with_probe = rule_lines(
        render_many(["h"], [(p, rules)], fmt, probe_admissions(rules, PROBE_SOURCES))
    )
    assert with_probe == without + lines
    assert not any("probe" in line for line in without)
