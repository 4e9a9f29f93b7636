"""`controparte doctor` and the probe on real networks: namespaces, veths, nftables (see
conftest.py for the world). Each case blocks one flow the way sites do and checks that
doctor names exactly that flow and its fix, and that it passes when nothing is blocked.

    case                                     blocked by                    fix named
    everything open (on-premises, Live)      -                             -
    (a) no port forward at the caller        its nat rule absent           forward 8443 -> 8000
    (a) no port forward at the counterpart   its nat rule removed          its port forward
    (b) egress to 9000-9999 blocked          output drop, 9000-9999        egress 9000-9999
    (c) 443 to the start-live hosts blocked  output reject, 443            egress 443, each host
    (d) registered port not the forwarded    nothing listens on 9100       register the right one
    forward to another installation's host   agent listen as B1            correct the forward
"""

from __future__ import annotations

import json

import pytest

from tests.netns.conftest import (
    CALLEE,
    CALLEE_ADDRESS,
    CALLER_ADDRESS,
    LIVE,
    SERVER_URL,
    SERVICE,
    START_LIVE,
    DoctorRun,
    Site,
    World,
    curl,
)

pytestmark = pytest.mark.integration

B = CALLEE[0]
L = LIVE[0]
EGRESS_LIVE_RANGE_DROPPED = """\
table inet site {
  chain egress {
    type filter hook output priority filter; policy accept;
    tcp dport 9000-9999 ct state new drop comment "the site lets nothing out to 9000-9999"
  }
}
"""
EGRESS_HTTPS_REJECTED = """\
table inet site {
  chain egress {
    type filter hook output priority filter; policy accept;
    tcp dport 443 ct state new reject with icmpx admin-prohibited comment "no HTTPS out"
  }
}
"""


def _start_live_ids(code: str) -> list[str]:
    return [f"start-live:{code}->{host}" for host in START_LIVE]


def towards_live(site: Site, slug: str, rules: str | None = None) -> tuple[str, DoctorRun]:
    """A caller `A-<slug>` on public port 9443, forwarded to its MxServer port 8000 where
    the agent listens, behind the nftables `rules`; its code and doctor's run towards
    live-l for einvoice."""
    code = site.caller(slug, port=9443, private_port=8000, forward=True, listen_on=8000)
    site.world.link(code, L, "einvoice")
    if rules is not None:
        site.nft("a", rules)
    return code, site.doctor(code, "live-l", "einvoice")


def live_statuses(code: str, outbound: str, start_live: str) -> dict[str, str]:
    """Every flow's status towards live-l: outbound, return (passed), each start-live."""
    expected = {f"outbound:{code}->{L}": outbound, f"return:{L}->{code}": "passed"}
    return expected | dict.fromkeys(_start_live_ids(code), start_live)


# -- nothing blocked -----------------------------------------------------------------------------


def test_everything_open_between_on_premises_servers_passes(site: Site, world: World) -> None:
    code = site.caller("ok", port=8443, private_port=8000, forward=True, listen_on=8000)
    world.link(code, B, "realtime")  # studio-b's agent dials back for linked pairs only
    run = site.doctor(code, "studio-b", "realtime")
    assert run.exit_code == 0, run.report
    assert run.status() == {
        f"outbound:{code}->{B}": "passed",
        f"outbound:{B}->{code}": "passed",
        f"return:{B}->{code}": "passed",
        f"return:{code}->{B}": "passed",
    }
    tests = run.flows[f"return:{B}->{code}"]["tests"]
    assert isinstance(tests, list)
    assert [t["from"] for t in tests] == ["counterpart-agent", "service"]
    for dial, origin in zip(tests, (CALLEE_ADDRESS, SERVICE), strict=True):
        assert dial["result"] == "open"
        assert dial["address"] == CALLER_ADDRESS
        assert dial["port"] == 8443
        assert dial["nonce_verified"] is True
        assert dial["from_address"] == origin
    assert run.flows[f"return:{B}->{code}"]["tested_from"] == ["counterpart-agent"]
    connect = run.flows[f"outbound:{code}->{B}"]["tests"][0]  # type: ignore[index]
    assert (connect["address"], connect["port"], connect["result"]) == (
        CALLEE_ADDRESS,
        8443,
        "open",
    )
    assert all(flow["fix"] is None for flow in run.flows.values())


def test_everything_open_towards_a_live_counterpart_passes(site: Site) -> None:
    code, run = towards_live(site, "live")
    assert run.exit_code == 0, run.report
    assert run.status() == live_statuses(code, outbound="passed", start_live="passed")


# -- (a) no port forward ------------------------------------------------------------------------


def test_a_missing_port_forward_at_the_caller_names_its_router(site: Site) -> None:
    code = site.caller("nofwd", port=8443, private_port=8000, forward=False, listen_on=8000)
    run = site.doctor(code, "studio-b", "einvoice")
    assert run.exit_code == 1
    assert run.status() == {f"outbound:{code}->{B}": "passed", f"return:{B}->{code}": "failed"}
    failed = run.flows[f"return:{B}->{code}"]
    assert (
        failed["fix"] == "add a port forward on shop-nofwd's router: public 8443 -> MxServer's 8000"
    )
    assert str(failed["reason"]) == (
        f"the service's probe (from {SERVICE}) to {CALLER_ADDRESS}:8443 was refused (a TCP"
        " reset: nothing listens there)"
    )


def test_a_missing_port_forward_at_the_counterpart_names_its_side(site: Site) -> None:
    site.flush("b")  # studio-b's router loses its port forward 8443 -> 8000
    code = site.caller("theirs", port=8443, private_port=8000, forward=True, listen_on=8000)
    site.world.link(code, B, "einvoice")
    run = site.doctor(code, "studio-b", "einvoice")
    assert run.exit_code == 1
    assert run.status() == {f"outbound:{code}->{B}": "failed", f"return:{B}->{code}": "passed"}
    failed = run.flows[f"outbound:{code}->{B}"]
    assert f"connecting to {CALLEE_ADDRESS}:8443: refused" in str(failed["reason"])
    fix = str(failed["fix"])
    assert fix.startswith("on studio-b's side (run `controparte doctor` there)")
    assert "add a port forward on studio-b's router: public 8443 -> MxServer's port 8000" in fix
    assert "egress" not in fix


# -- (b) egress to the Live range blocked at the caller --------------------------------------


def test_b_egress_to_the_live_range_blocked_names_the_callers_firewall(site: Site) -> None:
    code, run = towards_live(site, "egress", EGRESS_LIVE_RANGE_DROPPED)
    assert run.exit_code == 1
    assert run.status() == live_statuses(code, outbound="failed", start_live="passed")
    failed = run.flows[f"outbound:{code}->{L}"]
    assert "no answer in 2.0 s" in str(failed["reason"])
    assert str(failed["fix"]).startswith(
        "open egress tcp 9000-9999 on shop-egress's firewall (this machine's, or the site's"
        " firewall or router), towards 198.51.100.34"
    )


# -- (c) 443 to the start-live hosts blocked --------------------------------------------------


def test_c_https_to_the_start_live_hosts_blocked_names_each_host(site: Site) -> None:
    code, run = towards_live(site, "https", EGRESS_HTTPS_REJECTED)
    assert run.exit_code == 1
    assert run.status() == live_statuses(code, outbound="passed", start_live="failed")
    for host, address in START_LIVE.items():
        failed = run.flows[f"start-live:{code}->{host}"]
        assert f"connecting to {host}:443 ({address}): rejected on the way" in str(failed["reason"])
        assert str(failed["fix"]).startswith(
            "open egress tcp 443 on shop-https's firewall (this machine's, or the site's"
            f" firewall or router), towards {host}"
        )


# -- (d) the registered public port is not the forwarded one ---------------------------------


def test_d_registered_port_not_the_forwarded_one_says_so(site: Site) -> None:
    # MxServer (here the agent's listener) is on 8000; 9100 was registered; no forward.
    code = site.caller("wrongport", port=9100, listen_on=8000)
    run = site.doctor(code, "studio-b", "einvoice")
    assert run.exit_code == 1
    assert run.status() == {f"outbound:{code}->{B}": "passed", f"return:{B}->{code}": "failed"}
    fix = str(run.flows[f"return:{B}->{code}"]["fix"])
    assert fix.startswith(
        "the public port registered (9100) is not the one forwarded: nothing answers on"
        " 9100 from outside and nothing listens on 9100 on this machine."
    )


# -- the port forward reaches another installation's machine ---------------------------------


def test_forward_to_another_installations_machine_fails_the_nonce(site: Site) -> None:
    code = site.caller(
        "elsewhere", port=8443, private_port=8000, forward=True, listen_on=8000, listen_as=B
    )
    run = site.doctor(code, "studio-b", "einvoice")
    assert run.exit_code == 1
    failed = run.flows[f"return:{B}->{code}"]
    assert failed["status"] == "failed"
    (probe,) = [t for t in failed["tests"] if t["from"] == "service"]  # type: ignore[attr-defined]
    assert str(failed["reason"]) == (
        f"the service's probe (from {SERVICE}) to {CALLER_ADDRESS}:8443 connected in"
        f" {probe['elapsed_ms']} ms, but the controparte agent there answered"
        f" as {B!r} without this installation's proof: public port 8443 reaches another"
        " machine, not this one"
    )
    assert failed["fix"] == (
        "correct the port forward on shop-elsewhere's router: public 8443 must go to this"
        " machine, MxServer's port 8000"
    )
    assert (probe["result"], probe["nonce_verified"], probe["agent_code"]) == ("open", False, B)


# -- every linked counterpart ------------------------------------------------------------------


def test_without_to_every_link_is_checked_from_its_side(site: Site, world: World) -> None:
    code = site.caller("links", port=9443, private_port=8000, forward=True, listen_on=8000)
    world.link(code, B, "einvoice")  # the shop calls studio-b
    world.link(L, code, "sprix")  # the Live studio runs remote Sprix on the shop
    run = site.doctor(code, None, None)
    assert run.exit_code == 0, run.report
    by_feature = {str(c["feature"]["id"]): c for c in run.checks}  # type: ignore[index]
    assert {f: c["here"] for f, c in by_feature.items()} == {
        "einvoice": "caller",
        "sprix": "callee",
    }
    sprix = {f["id"]: f["status"] for f in by_feature["sprix"]["flows"]}  # type: ignore[attr-defined]
    expected = {f"outbound:{L}->{code}": "passed", f"return:{code}->{L}": "passed"}
    expected |= dict.fromkeys(_start_live_ids(code), "passed")
    assert sprix == expected


# -- the probe's own rules ---------------------------------------------------------------------


def test_probe_dials_only_the_registered_address_and_only_when_asked_from_it(
    site: Site, world: World
) -> None:
    code = site.caller("probe", port=8443, private_port=8000, forward=True, listen_on=8000)
    token = world.tokens[code].read_text().strip()
    url = f"{SERVER_URL}/v1/installations/{code}/probe"
    # From studio-b's machine, with the caller's token: refused, nothing dialled.
    status, _retry, body = curl(world, "b", "POST", url, token).stdout.split("\n", 2)
    assert status == "403"
    assert f"comes from {CALLEE_ADDRESS}, but installation '{code}' is registered at" in body
    # From the caller's machine: open, and proven.
    status, _retry, body = curl(world, "a", "POST", url, token).stdout.split("\n", 2)
    assert status == "200", body
    answer = json.loads(body)
    assert answer["result"] == "open"
    assert (answer["address"], answer["port"]) == (CALLER_ADDRESS, 8443)
    assert answer["nonce_verified"] is True
    assert isinstance(answer["elapsed_ms"], int)
    # At once again: too soon.
    status, retry, body = curl(world, "a", "POST", url, token).stdout.split("\n", 2)
    assert status == "429"
    assert 1 <= int(retry) <= 5
    assert "probed less than" in body


# -- the human form --------------------------------------------------------------------------


def test_text_output_of_remote_access_from_a_client(site: Site, world: World) -> None:
    code = site.caller("client", port=9443)
    world.link(code, L, "remote-access")
    site.nft("a", EGRESS_LIVE_RANGE_DROPPED)
    argv = site.doctor_command(code, "live-l", "remote-access", timeout=1)
    done = world.lab.run("a", *argv, check=False)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        f"doctor: remote-access (Remote access (iDesk clients to the remote server)), from"
        f" shop-client ({code}), the caller"
    )
    assert lines[3].startswith("  this machine: a client (nothing listens on port 9443 here")
    flow = lines.index(
        f"FAILED    remote-access outbound: every client of shop-client ({code}) -> live-l (L1)"
    )
    assert lines[flow + 1].endswith("[tested from this machine, the service]")
    assert lines[flow + 2] == (
        "          fix: open egress tcp 9000-9999 on shop-client's firewall (this machine's,"
        " or the site's firewall or router), towards 198.51.100.34: the service reaches"
        " live-l on its public port 9100, this machine does not"
    )
    assert lines[-1].startswith("1 failed, 2 passed, 0 warning(s), 0 untested: first fix:")
