"""Links, plans and firewall rules from the command line (typer's runner, a real store
in a temporary directory): `link add/list/remove`, `plan` in every format, `firewall`
with its change detection, and the Live port rule on every way into the registry."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from controparte.store import open_store
from tests.clirunner import Run, as_json, invoke_cli, ok, user_error

ROWS = """\
code,label,kind,ip,ipv6,port
AZ-1,azienda,onprem,203.0.113.10,2001:db8::10,4443
ST-2,studio,live,198.51.100.20,,9102
PA-3,paghe,onprem,192.0.2.30,,9443
"""


@pytest.fixture
def seeded(run: Run, tmp_path: Path) -> Run:
    rows = tmp_path / "rows.csv"
    rows.write_text(ROWS)
    ok(run("import", str(rows)))
    return run


# -- links -----------------------------------------------------------------------------------


def test_link_add_list_remove(seeded: Run) -> None:
    run = seeded
    out = ok(
        run("link", "add", "AZ-1", "studio", "--feature", "primanota", "--feature", "realtime")
    )
    assert out.stdout.splitlines() == [
        "linked AZ-1 -> ST-2: primanota",
        "linked AZ-1 -> ST-2: realtime",
    ]
    again = as_json(
        run(
            "link",
            "add",
            "azienda",
            "ST-2",
            "--feature",
            "realtime",
            "--feature",
            "einvoice",
            "--json",
        )
    )
    assert isinstance(again, list)
    assert [(x["feature"], x["new"]) for x in again] == [("realtime", False), ("einvoice", True)]
    ok(run("link", "add", "PA-3", "AZ-1", "--feature", "sprix"))

    listed = as_json(run("link", "list", "--json"))
    assert isinstance(listed, list)
    assert [(x["a"], x["b"], x["feature"]) for x in listed] == [
        ("AZ-1", "ST-2", "einvoice"),
        ("AZ-1", "ST-2", "primanota"),
        ("AZ-1", "ST-2", "realtime"),
        ("PA-3", "AZ-1", "sprix"),
    ]
    assert set(listed[0]) == {"a", "b", "feature", "created"}
    of_studio = as_json(run("link", "list", "studio", "--json"))
    assert isinstance(of_studio, list) and len(of_studio) == 3
    of_azienda = as_json(run("link", "list", "AZ-1", "--json"))
    assert isinstance(of_azienda, list) and len(of_azienda) == 4  # as caller and as callee
    table = ok(run("link", "list")).stdout
    assert "AZ-1 (azienda)" in table and "PA-3 (paghe)" in table and "sprix" in table

    # Direction matters: B -> A is not A -> B.
    assert "no link from ST-2 to AZ-1" in user_error(run("link", "remove", "ST-2", "AZ-1"))
    removed = ok(run("link", "remove", "AZ-1", "ST-2", "--feature", "realtime")).stdout
    assert removed == "removed AZ-1 -> ST-2: realtime\n"
    removed = ok(run("link", "remove", "AZ-1", "ST-2")).stdout
    assert removed.splitlines() == [
        "removed AZ-1 -> ST-2: einvoice",
        "removed AZ-1 -> ST-2: primanota",
    ]
    assert "for realtime" in user_error(
        run("link", "remove", "AZ-1", "ST-2", "--feature", "realtime")
    )
    listed = as_json(run("link", "list", "--json"))
    assert isinstance(listed, list) and len(listed) == 1


def test_links_are_audited_on_both_installations(seeded: Run) -> None:
    run = seeded
    ok(run("link", "add", "AZ-1", "ST-2", "--feature", "primanota"))
    ok(run("link", "remove", "AZ-1", "ST-2"))
    for code in ("AZ-1", "ST-2"):
        history = as_json(run("installation", "history", code, "--json"))
        assert isinstance(history, list)
        actions = [(e["action"], (e["new"] or e["old"] or {}).get("feature")) for e in history]
        assert actions[-2:] == [("link", "primanota"), ("unlink", "primanota")]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("AZ-1", "ST-2", "--feature", "nope"),
            "feature: unknown feature 'nope' (known: easypass,",
        ),
        (("AZ-1", "ST-2", "--feature", "Bad Id"), "feature: 'Bad Id' is not a feature id"),
        (
            ("AZ-1", "azienda", "--feature", "realtime"),
            "b: an installation cannot be linked to itself",
        ),
        (
            ("AZ-1", "nobody", "--feature", "realtime"),
            "no installation with code or label 'nobody'",
        ),
    ],
)
def test_link_add_errors_are_one_line(seeded: Run, args: tuple[str, ...], expected: str) -> None:
    assert expected in user_error(seeded("link", "add", *args))
    assert as_json(seeded("link", "list", "--json")) == []


def test_link_add_needs_a_feature(seeded: Run) -> None:
    result = seeded("link", "add", "AZ-1", "ST-2")
    assert result.exit_code == 2  # usage: --feature is required
    assert "--feature" in result.output


def test_removing_an_installation_removes_its_links(seeded: Run, data: Path) -> None:
    run = seeded
    ok(run("link", "add", "AZ-1", "ST-2", "--feature", "primanota"))
    ok(run("link", "add", "PA-3", "ST-2", "--feature", "primanota"))
    ok(run("firewall", "ST-2"))
    ok(run("installation", "remove", "AZ-1"))
    listed = as_json(run("link", "list", "--json"))
    assert isinstance(listed, list)
    assert [(x["a"], x["b"]) for x in listed] == [("PA-3", "ST-2")]
    store = open_store(data)
    try:
        assert list(store.firewall_seen("ST-2")) == ["PA-3"]
    finally:
        store.close()


def test_reads_need_an_existing_registry(bare_data: Path) -> None:
    for args in (("link", "list"), ("plan", "A", "B", "--feature", "realtime"), ("firewall", "A")):
        assert "no registry" in user_error(invoke_cli(*args, data=bare_data), 2)


# -- plan ------------------------------------------------------------------------------------


def test_plan_table_shows_every_flow_what_each_side_allows_and_the_fix(seeded: Run) -> None:
    out = ok(seeded("plan", "azienda", "ST-2", "--feature", "primanota")).stdout
    lines = out.splitlines()
    assert lines[0] == "primanota: Prima nota transmission (company to accountant)"
    assert " ".join(lines[1].split()) == (
        "caller azienda (AZ-1): on-premises, 203.0.113.10, 2001:db8::10, port 4443"
    )
    assert " ".join(lines[2].split()) == "callee studio (ST-2): Live, 198.51.100.20, port 9102"
    assert "caller must allow" in out and "callee must allow" in out
    assert "out tcp 9000-9999 to" in out and "198.51.100.20" in out
    assert "NAT tcp 4443 -> 4443" in out
    assert out.count("BLOCKED") == 2  # the return flow's row and its explanation
    assert "BLOCKED #5: studio (ST-2) is Live" in out
    # The three start-live hosts are alternatives: rows 2-4, and a note naming them.
    assert out.count("outbound, any of 3") == 3
    assert "azienda (AZ-1) needs port 443 on any one of start-live.controparte.test" in " ".join(
        out.split()
    )
    assert "fix: give azienda (AZ-1) a public port in 9000-9999" in " ".join(out.split())


def test_plan_side_shows_one_column(seeded: Run) -> None:
    out = ok(seeded("plan", "AZ-1", "ST-2", "--feature", "einvoice", "--side", "callee")).stdout
    assert "callee must allow" in out and "caller must allow" not in out


def test_plan_json_follows_the_schema(seeded: Run) -> None:
    found = as_json(seeded("plan", "AZ-1", "PA-3", "--feature", "sprix", "--format", "json"))
    assert isinstance(found, dict)
    assert found["schema"] == "controparte.plan/1"
    assert found["feature"] == {"id": "sprix", "name": "Remote Sprix", "topology": "server-async"}
    assert found["caller"] == {
        "code": "AZ-1",
        "label": "azienda",
        "live": False,
        "addresses": ["203.0.113.10", "2001:db8::10"],
        "port": 4443,
        "private_port": None,
        "gateway": None,
    }
    assert found["side"] is None and found["blocked"] is False
    outbound = found["flows"][0]
    port = {"low": 9443, "high": 9443}
    azienda = {"name": "azienda (AZ-1)", "addresses": ["203.0.113.10", "2001:db8::10"], "hosts": []}
    assert outbound == {
        "id": "outbound:AZ-1->PA-3",
        "direction": "outbound",
        "description": "sprix outbound: azienda (AZ-1) -> paghe (PA-3)",
        "source": {"role": "caller", "origin": "server", "code": "AZ-1", "label": "azienda"},
        "destination": {
            "role": "callee",
            "code": "PA-3",
            "label": "paghe",
            "host": None,
            "addresses": ["192.0.2.30"],
            "ports": port,
        },
        "rules": [
            {
                "side": "caller",
                "action": "egress",
                "origin": "server",
                "peer": {"name": "paghe (PA-3)", "addresses": ["192.0.2.30"], "hosts": []},
                "ports": port,
                "to_port": None,
                "why": "out to paghe (PA-3)'s public port",
            },
            {
                "side": "callee",
                "action": "port-forward",
                "origin": "server",
                "peer": azienda,
                "ports": port,
                "to_port": 9443,
                "why": "NAT: public 9443 -> MxServer's port 9443",
            },
            {
                "side": "callee",
                "action": "inbound",
                "origin": "server",
                "peer": azienda,
                "ports": port,
                "to_port": None,
                "why": "in from azienda (AZ-1) on MxServer's port 9443",
            },
        ],
        "blocked": None,
        "fix": None,
        "any_of": None,
    }
    assert [f["direction"] for f in found["flows"]] == ["outbound", "return"]
    live = as_json(seeded("plan", "AZ-1", "ST-2", "--feature", "sprix", "--format", "json"))
    assert isinstance(live, dict)
    assert [(f["destination"]["host"], f["any_of"]) for f in live["flows"]] == [
        (None, None),
        ("start-live.controparte.test", "start-live:AZ-1"),
        ("start-live01.controparte.test", "start-live:AZ-1"),
        ("start-live02.controparte.test", "start-live:AZ-1"),
        (None, None),
    ]
    only_callee = as_json(
        seeded("plan", "AZ-1", "PA-3", "--feature", "sprix", "--format", "json", "--side", "callee")
    )
    assert isinstance(only_callee, dict) and only_callee["side"] == "callee"
    assert {r["side"] for f in only_callee["flows"] for r in f["rules"]} == {"callee"}


def test_plan_firewall_formats_default_to_the_caller(seeded: Run) -> None:
    run = seeded
    nft = ok(run("plan", "AZ-1", "ST-2", "--feature", "primanota", "--format", "nftables")).stdout
    assert "rules for the caller, azienda (AZ-1)" in nft
    assert "add rule inet filter output ip daddr { 198.51.100.20 } tcp dport 9000-9999" in nft
    callee = ok(
        run(
            "plan",
            "AZ-1",
            "PA-3",
            "--feature",
            "primanota",
            "--format",
            "iptables",
            "--side",
            "callee",
        )
    ).stdout
    assert "rules for the callee, paghe (PA-3)" in callee
    assert "iptables -A INPUT -p tcp -s 203.0.113.10 --dport 9443" in callee
    assert "ip6tables -A INPUT -p tcp -s 2001:db8::10 --dport 9443" in callee
    windows = ok(run("plan", "AZ-1", "PA-3", "--feature", "realtime", "--format", "windows")).stdout
    assert "New-NetFirewallRule" in windows


@pytest.mark.parametrize("fmt", ["table", "json", "nftables", "windows"])
@pytest.mark.parametrize(
    ("caller", "callee", "feature", "status"),
    [
        ("AZ-1", "ST-2", "primanota", 1),  # the Live studio cannot dial back to 4443
        ("AZ-1", "ST-2", "remote-access", 0),
        ("AZ-1", "PA-3", "realtime", 0),
    ],
)
def test_plan_check_exits_1_when_a_flow_is_blocked_with_the_same_output(
    seeded: Run, fmt: str, caller: str, callee: str, feature: str, status: int
) -> None:
    args = ("plan", caller, callee, "--feature", feature, "--format", fmt)
    plain = ok(seeded(*args))
    checked = seeded(*args, "--check")
    assert checked.exit_code == status, checked.output
    assert checked.stdout == plain.stdout and checked.stderr == plain.stderr == ""
    said = "BLOCKED" in plain.stdout or '"blocked": true' in plain.stdout
    assert said == bool(status)


@pytest.mark.parametrize(
    ("args", "expected", "code"),
    [
        (("AZ-1", "ST-2", "--feature", "nope"), "feature: unknown feature 'nope'", 1),
        (("AZ-1", "AZ-1", "--feature", "realtime"), "callee: caller and callee are the same", 1),
        (("AZ-1", "nobody", "--feature", "realtime"), "'nobody'", 1),
    ],
)
def test_plan_errors_are_one_line(
    seeded: Run, args: tuple[str, ...], expected: str, code: int
) -> None:
    assert expected in user_error(seeded("plan", *args), code)


def test_plan_uses_the_operator_catalog(seeded: Run, tmp_path: Path) -> None:
    catalog = tmp_path / "features.toml"
    catalog.write_text(
        "[live]\nport_range = [4000, 4999]\nstart_live_hosts = ['broker.example.test']\n"
        "[features.backup]\nname = 'Nightly backup'\ntopology = 'server-async'\n"
    )
    found = as_json(
        seeded(
            "plan",
            "AZ-1",
            "ST-2",
            "--feature",
            "backup",
            "--format",
            "json",
            "--features",
            str(catalog),
        )
    )
    assert isinstance(found, dict)
    assert found["flows"][0]["destination"]["ports"] == {"low": 4000, "high": 4999}
    assert found["flows"][0]["blocked"].endswith("is outside 4000-4999")
    hosts = [f["destination"]["host"] for f in found["flows"] if f["destination"]["host"]]
    assert hosts == ["broker.example.test"]
    assert all(f["any_of"] is None for f in found["flows"])  # one host: simply required
    env = {"CONTROPARTE_FEATURES": str(catalog)}
    assert "feature: unknown feature 'realtime' (known: backup)" in user_error(
        seeded("plan", "AZ-1", "ST-2", "--feature", "realtime", env=env)
    )
    line = user_error(
        seeded(
            "plan",
            "AZ-1",
            "ST-2",
            "--feature",
            "x",
            env={"CONTROPARTE_FEATURES": str(tmp_path / "none.toml")},
        ),
        2,
    )
    assert line.startswith("error: features: cannot read")


# -- firewall --------------------------------------------------------------------------------


def test_firewall_covers_links_both_ways_limited_to_current_addresses(seeded: Run) -> None:
    run = seeded
    ok(run("link", "add", "AZ-1", "PA-3", "--feature", "primanota"))
    ok(run("link", "add", "ST-2", "AZ-1", "--feature", "remote-access"))
    first = ok(run("firewall", "azienda"))
    assert first.stderr == "no earlier run recorded for AZ-1: addresses recorded now\n"
    script = first.stdout
    assert "# link AZ-1 -> PA-3: primanota (this side: caller)" in script
    assert "# link ST-2 -> AZ-1: remote-access (this side: callee)" in script
    assert "add rule inet filter output ip daddr { 192.0.2.30 } tcp dport 9443" in script
    assert "add rule inet filter input ip saddr { 192.0.2.30 } tcp dport 4443" in script
    # Remote access comes from the caller's clients, wherever they are.
    assert (
        'tcp dport 4443 ct state new accept comment "controparte remote-access: inbound' in script
    )
    assert "# BLOCKED remote-access outbound" in script  # Live clients dial 9000-9999 only

    quiet = ok(run("firewall", "AZ-1", "--format", "iptables"))
    assert quiet.stderr == ""
    assert "iptables -A OUTPUT -p tcp -d 192.0.2.30 --dport 9443" in quiet.stdout

    ok(run("installation", "update", "PA-3", "--ip", "192.0.2.31"))
    changed = ok(run("firewall", "AZ-1", "--json"))
    (line,) = changed.stderr.splitlines()
    assert line.startswith("changed since ")
    assert line.endswith(": paghe 192.0.2.30 -> 192.0.2.31")
    report = json.loads(changed.stdout)
    assert report["schema"] == "controparte.firewall/1"
    assert report["changes"] == [
        {
            "kind": "changed",
            "counterpart": "PA-3",
            "label": "paghe",
            "before": ["192.0.2.30"],
            "after": ["192.0.2.31"],
            "since": report["previous_run"],
        }
    ]
    assert "192.0.2.31" in report["script"] and "192.0.2.30" not in report["script"]
    assert [c["code"] for c in report["counterparts"]] == ["PA-3", "ST-2"]
    assert ok(run("firewall", "AZ-1")).stderr == ""  # recorded: no change any more


def test_firewall_reports_new_and_gone_counterparts(seeded: Run) -> None:
    run = seeded
    ok(run("link", "add", "AZ-1", "PA-3", "--feature", "einvoice"))
    ok(run("firewall", "AZ-1"))
    ok(run("link", "remove", "AZ-1", "PA-3"))
    ok(run("link", "add", "AZ-1", "ST-2", "--feature", "einvoice"))
    lines = ok(run("firewall", "AZ-1")).stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("gone since ") and lines[0].endswith(
        ": paghe 192.0.2.30 (no longer linked)"
    )
    assert lines[1].startswith("new since ") and lines[1].endswith(": studio 198.51.100.20")


def test_firewall_leaves_out_rules_for_a_counterpart_without_address(seeded: Run) -> None:
    run = seeded
    ok(run("installation", "add", "NO-4", "--label", "nowhere", "--port", "9444"))
    ok(run("link", "add", "AZ-1", "NO-4", "--feature", "einvoice"))
    script = ok(run("firewall", "AZ-1")).stdout
    assert "# left out for einvoice: egress 9444 for nowhere (NO-4)" in script
    assert "# left out for einvoice: inbound 4443 for nowhere (NO-4)" in script
    assert [line for line in script.splitlines() if not line.startswith("#")] == []


PROBE = "controparte probe: the service's outside-in probe"


def test_firewall_admits_the_services_probe_where_inbound_is_limited(seeded: Run) -> None:
    run = seeded
    ok(run("link", "add", "PA-3", "AZ-1", "--feature", "einvoice"))
    without = ok(run("firewall", "AZ-1")).stdout
    (note,) = [line for line in without.splitlines() if "outside-in probe" in line]
    assert note.startswith("# the service's outside-in probe (controparte doctor) will not")
    assert "set probe_sources" in note
    assert PROBE not in without
    report = json.loads(ok(run("firewall", "AZ-1", "--json")).stdout)
    assert (report["probe_sources"], report["probe_rules"]) == ([], [])
    assert note[2:] in report["notes"]

    env = {"CONTROPARTE_PROBE_SOURCES": "192.0.2.53,2001:db8:53::1"}
    script = ok(run("firewall", "AZ-1", env=env)).stdout
    assert "will not get through" not in script
    assert [line for line in script.splitlines() if PROBE in line] == [
        "add rule inet filter input ip saddr { 192.0.2.53 } tcp dport 4443 ct state new"
        f' accept comment "{PROBE}"',
        "add rule inet filter input ip6 saddr { 2001:db8:53::1 } tcp dport 4443 ct state new"
        f' accept comment "{PROBE}"',
    ]
    report = json.loads(ok(run("firewall", "AZ-1", "--json", env=env)).stdout)
    assert report["probe_sources"] == ["192.0.2.53", "2001:db8:53::1"]
    (rule,) = report["probe_rules"]
    assert (rule["action"], rule["ports"], rule["peer"]["addresses"]) == (
        "inbound",
        {"low": 4443, "high": 4443},
        ["192.0.2.53", "2001:db8:53::1"],
    )
    assert report["script"] == script


def test_no_probe_note_without_a_limited_inbound_rule(seeded: Run) -> None:
    # Remote access comes from PA-3's clients, wherever they are: AZ-1 lets anyone in.
    ok(seeded("link", "add", "PA-3", "AZ-1", "--feature", "remote-access"))
    script = ok(seeded("firewall", "AZ-1")).stdout
    assert "tcp dport 4443 ct state new accept" in script
    assert "probe" not in script


def test_firewall_with_no_links(seeded: Run) -> None:
    out = ok(seeded("firewall", "AZ-1")).stdout
    assert "# no links: nothing to allow" in out


# -- the Live port range on every way in -------------------------------------------------------


def test_live_port_outside_the_range_is_refused_on_add_update_and_import(
    seeded: Run, tmp_path: Path
) -> None:
    run = seeded
    line = user_error(
        run("installation", "add", "LV-9", "--label", "lv", "--kind", "live", "--port", "443")
    )
    assert line == (
        "error: port: 443 is outside the Live range 9000-9999: a Live installation (LV-9)"
        " must have its public port in 9000-9999"
    )
    assert "Live range 9000-9999" in user_error(
        run("installation", "update", "ST-2", "--port", "8443")
    )
    assert "Live range 9000-9999" in user_error(
        run("installation", "update", "AZ-1", "--kind", "live")
    )
    ok(run("installation", "update", "PA-3", "--kind", "live"))  # 9443: inside
    rows = tmp_path / "live.csv"
    rows.write_text("code,label,kind,port\nLV-8,lv8,live,9000\nLV-9,lv9,live,10000\n")
    result = run("import", str(rows))
    assert result.exit_code == 1
    assert f"{rows}: line 3: port: 10000 is outside the Live range 9000-9999" in result.stderr
    # Live without a port yet is fine; so is any port on-premises.
    ok(run("installation", "add", "LV-7", "--label", "lv7", "--kind", "live"))
    ok(run("installation", "add", "OP-6", "--label", "op6", "--port", "443"))


def test_a_stored_live_port_outside_the_range_does_not_block_other_changes(
    seeded: Run, data: Path
) -> None:
    """A row stored before the rule (or before the range changed) keeps working."""
    connection = sqlite3.connect(data / "controparte.sqlite3")
    with connection:
        connection.execute("UPDATE installations SET port = 443 WHERE code = 'ST-2'")
    connection.close()
    ok(seeded("installation", "update", "ST-2", "--label", "studio2"))
    assert "Live range" in user_error(seeded("installation", "update", "ST-2", "--port", "444"))
    ok(seeded("installation", "update", "ST-2", "--port", "9100"))


def test_the_operator_range_applies_to_the_registry(seeded: Run, tmp_path: Path) -> None:
    catalog = tmp_path / "features.toml"
    catalog.write_text(
        "[live]\nport_range = [4000, 4999]\nstart_live_hosts = ['broker.example.test']\n"
        "[features.backup]\ntopology = 'server-async'\n"
    )
    env = {"CONTROPARTE_FEATURES": str(catalog)}
    ok(
        seeded(
            "installation",
            "add",
            "LV-1",
            "--label",
            "lv1",
            "--kind",
            "live",
            "--port",
            "4443",
            env=env,
        )
    )
    assert "Live range 4000-4999" in user_error(
        seeded("installation", "update", "LV-1", "--port", "9100", env=env)
    )
