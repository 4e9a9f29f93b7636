"""The command line, driven in process through typer's runner: every command, `--json`,
the one-line error contract and its exit codes, and imports that are all-or-nothing."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import controparte.serve
from controparte import __version__
from controparte.cli import _COMMANDS, app
from controparte.settings import HostPort, NameServer, Settings
from controparte.store import open_store
from tests.clirunner import Run, as_json, invoke_cli, ok, user_error


def add(run: Run, code: str, label: str, *extra: str) -> dict[str, object]:
    found = as_json(run("installation", "add", code, "--label", label, "--json", *extra))
    assert isinstance(found, dict)
    return found


def codes(run: Run) -> list[str]:
    listed = as_json(run("installation", "list", "--json"))
    assert isinstance(listed, list)
    return [str(item["code"]) for item in listed]


# -- add, list, show, update, remove ----------------------------------------------------


def test_add_prints_the_installation_as_json(run: Run) -> None:
    found = add(
        run,
        "ACME-01",
        "Acme",
        "--kind",
        "live",
        "--ip",
        "192.0.2.10",
        "--ipv6",
        "2001:DB8::0:10",
        "--port",
        "9001",
    )
    assert {k: found[k] for k in ("code", "label", "kind", "ip", "ipv6", "port")} == {
        "code": "ACME-01",
        "label": "acme",
        "kind": "live",
        "ip": "192.0.2.10",
        "ipv6": "2001:db8::10",
        "port": 9001,
    }
    assert found["last_seen"] is None


def test_add_without_json_prints_the_fields_for_people(run: Run) -> None:
    out = ok(run("installation", "add", "A1", "--label", "alpha", "--ip", "192.0.2.1")).stdout
    assert "alpha.bp.controparte.test." in out
    assert "192.0.2.1" in out
    assert "onprem" in out


def test_show_finds_by_code_label_and_name(run: Run) -> None:
    add(run, "A1", "alpha", "--ip", "192.0.2.1")
    add(run, "B2", "beta")
    for name in ("A1", "a1", "alpha", "ALPHA", "alpha.bp.controparte.test."):
        shown = as_json(run("installation", "show", name, "--json"))
        assert isinstance(shown, dict)
        assert shown["code"] == "A1", name
    assert "192.0.2.1" in ok(run("installation", "show", "alpha")).stdout


def test_show_unknown_is_a_one_line_error(run: Run) -> None:
    add(run, "A1", "alpha")
    line = user_error(run("installation", "show", "nobody"))
    assert "nobody" in line


def test_list_json_is_an_array_by_code_and_the_table_names_every_installation(run: Run) -> None:
    add(run, "B2", "beta", "--ipv6", "2001:db8::2")
    add(run, "A1", "alpha", "--ip", "192.0.2.1", "--port", "9000")
    listed = as_json(run("installation", "list", "--json"))
    assert isinstance(listed, list)
    assert [item["code"] for item in listed] == ["A1", "B2"]
    assert listed[0]["port"] == 9000
    table = ok(run("installation", "list")).stdout
    for text in ("A1", "alpha", "192.0.2.1", "9000", "B2", "beta", "2001:db8::2"):
        assert text in table
    assert codes(run) == ["A1", "B2"]
    limited = as_json(run("installation", "list", "--json", "--limit", "1", "--offset", "1"))
    assert isinstance(limited, list)
    assert [item["code"] for item in limited] == ["B2"]


def test_list_of_an_empty_registry(run: Run) -> None:
    add(run, "A1", "alpha")
    ok(run("installation", "remove", "A1"))
    assert as_json(run("installation", "list", "--json")) == []
    result = ok(run("installation", "list"))
    assert result.stdout == ""
    assert "no installations" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("installation", "list"),
        ("installation", "show", "x"),
        ("zone", "export"),
        ("installation", "add", "A1", "--label", "alpha"),
        ("import", "rows.csv"),
        ("admin-token",),
        ("tsig-key", "--admin", "--out", "admin.key"),
        ("tsig-key", "--transfer", "ns2", "--out", "ns2.key"),
        ("installation", "tsig-key", "A1", "--out", "a1.key"),
    ],
    ids=" ".join,
)
def test_no_command_but_init_and_serve_creates_a_registry(
    args: tuple[str, ...], bare_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command run from the wrong directory (or with a mistyped --data) says where it
    looked and how to point at the registry, and leaves nothing behind."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.csv").write_text("code,label\nA1,alpha\n")
    line = user_error(invoke_cli(*args, data=bare_data), exit_code=2)
    assert line == (
        f"error: data: no registry in {bare_data} (no controparte.sqlite3 there): point at"
        " yours with --data DIR or CONTROPARTE_DATA=DIR, or create one there with"
        " `controparte init` (`controparte serve` creates one too)"
    )
    assert not bare_data.exists()
    assert not list(tmp_path.glob("*.key"))


def test_init_creates_the_registry_once(bare_data: Path) -> None:
    assert ok(invoke_cli("init", data=bare_data)).stderr == f"registry created: {bare_data}\n"
    assert (bare_data / "controparte.sqlite3").is_file()
    ok(invoke_cli("installation", "add", "A1", "--label", "alpha", data=bare_data))
    again = ok(invoke_cli("init", data=bare_data))
    assert again.stderr == f"registry already there: {bare_data}\n"
    listed = ok(invoke_cli("installation", "list", "--json", data=bare_data))
    assert [i["code"] for i in json.loads(listed.stdout)] == ["A1"]


def test_update_changes_fields_and_empty_values_clear_them(run: Run) -> None:
    add(run, "A1", "alpha", "--ip", "192.0.2.1", "--ipv6", "2001:db8::1", "--port", "9000")
    updated = as_json(
        run(
            "installation",
            "update",
            "A1",
            "--label",
            "Omega",
            "--kind",
            "live",
            "--ip",
            "",
            "--port",
            "",
            "--json",
        )
    )
    assert isinstance(updated, dict)
    assert (updated["label"], updated["kind"], updated["ip"], updated["ipv6"], updated["port"]) == (
        "omega",
        "live",
        None,
        "2001:db8::1",
        None,
    )
    assert updated["updated"] != updated["created"]
    user_error(run("installation", "show", "alpha"))
    shown = as_json(run("installation", "show", "omega", "--json"))
    assert isinstance(shown, dict)
    assert shown["code"] == "A1"
    assert shown["ip"] is None


def test_update_without_a_field_is_refused(run: Run) -> None:
    add(run, "A1", "alpha")
    assert "nothing to change" in user_error(run("installation", "update", "A1"))


def test_update_and_remove_of_an_unknown_code(run: Run) -> None:
    add(run, "A1", "alpha")
    assert "Z9" in user_error(run("installation", "update", "Z9", "--label", "zed"))
    assert "Z9" in user_error(run("installation", "remove", "Z9"))


def test_remove_takes_the_installation_out(run: Run) -> None:
    add(run, "A1", "alpha")
    add(run, "B2", "beta")
    out = ok(run("installation", "remove", "A1")).stdout
    assert "A1" in out
    assert "alpha.bp.controparte.test." in out
    assert codes(run) == ["B2"]
    user_error(run("installation", "show", "A1"))
    user_error(run("installation", "remove", "A1"))


def test_writes_are_recorded_as_the_os_user_via_the_cli(run: Run, data: Path) -> None:
    add(run, "A1", "alpha")
    ok(run("installation", "update", "A1", "--port", "9000"))
    ok(run("installation", "remove", "A1"))
    store = open_store(data)
    try:
        history = store.history("A1")
    finally:
        store.close()
    # `installation add` issues the first token, which the history records too
    assert [h["action"] for h in history] == ["add", "token", "update", "remove"]
    assert {(h["actor"], h["via"]) for h in history} == {(getpass.getuser(), "cli")}


# -- errors: one line, naming the field -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("installation", "add", "a1", "--label", "other"), "code: 'a1' is already registered"),
        (("installation", "add", "B2", "--label", "ALPHA"), "label: 'alpha' is already used"),
        (("installation", "update", "B1", "--label", "Alpha"), "label: 'alpha' is already used"),
    ],
)
def test_conflicts_are_one_line_errors(run: Run, args: tuple[str, ...], expected: str) -> None:
    add(run, "A1", "alpha")
    add(run, "B1", "beta")
    assert expected in user_error(run(*args))
    assert codes(run) == ["A1", "B1"]
    shown = as_json(run("installation", "show", "B1", "--json"))
    assert isinstance(shown, dict)
    assert shown["label"] == "beta"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (("--label", "bad_label"), "label"),
        (("--label", "-dash"), "label"),
        (("--label", "x" * 64), "label"),
        (("--label", "ns1"), "label"),  # the zone's own name server
        (("--label", "ok", "--port", "0"), "port"),
        (("--label", "ok", "--port", "65536"), "port"),
        (("--label", "ok", "--port", "nine"), "port"),
        (("--label", "ok", "--ip", "192.0.2"), "ip"),
        (("--label", "ok", "--ip", "2001:db8::1"), "ip"),
        (("--label", "ok", "--ipv6", "192.0.2.1"), "ipv6"),
        (("--label", "ok", "--ipv6", "2001:db8::zz"), "ipv6"),
        (("--label", "ok", "--kind", "cloud"), "kind"),
    ],
)
def test_bad_values_name_the_field(run: Run, extra: tuple[str, ...], field: str) -> None:
    line = user_error(run("installation", "add", "A1", *extra))
    assert line.startswith(f"error: {field}: "), line


def test_bad_code_names_the_field(run: Run) -> None:
    line = user_error(run("installation", "add", "bad code!", "--label", "ok"))
    assert line.startswith("error: code: ")


def test_update_with_a_bad_value_changes_nothing(run: Run) -> None:
    add(run, "A1", "alpha", "--port", "9000")
    line = user_error(run("installation", "update", "A1", "--port", "99999", "--label", "new"))
    assert line.startswith("error: port: ")
    shown = as_json(run("installation", "show", "A1", "--json"))
    assert isinstance(shown, dict)
    assert (shown["label"], shown["port"]) == ("alpha", 9000)


def test_non_global_addresses_need_the_setting(run: Run) -> None:
    strict = {"CONTROPARTE_ALLOW_NON_GLOBAL": None}
    line = user_error(
        run("installation", "add", "A1", "--label", "a", "--ip", "10.0.0.1", env=strict)
    )
    assert line.startswith("error: ip: ")
    assert "allow_non_global" in line
    ok(
        run(
            "installation",
            "add",
            "A1",
            "--label",
            "a",
            "--ip",
            "10.0.0.1",
            "--allow-non-global",
            env=strict,
        )
    )
    ok(
        run(
            "installation",
            "add",
            "B2",
            "--label",
            "b",
            "--ip",
            "10.0.0.2",
            env={"CONTROPARTE_ALLOW_NON_GLOBAL": "true"},
        )
    )
    # a global address needs no setting (documentation ranges are not global)
    ok(run("installation", "add", "C3", "--label", "c", "--ip", "9.9.9.9", env=strict))
    assert codes(run) == ["A1", "B2", "C3"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--zone", "bad..zone"), "--zone"),
        (("--config", "/nonexistent/controparte.toml"), "config"),
    ],
)
def test_configuration_errors_exit_2(run: Run, args: tuple[str, ...], expected: str) -> None:
    line = user_error(run("installation", "add", "A1", "--label", "a", *args), exit_code=2)
    assert expected in line


def test_settings_come_from_the_toml_file_and_flags_beat_it(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "controparte.toml"
    config.write_text('zone = "reg.example.test"\n')
    out = ok(run("installation", "add", "A1", "--label", "a", "--config", str(config))).stdout
    assert "a.reg.example.test." in out
    out = ok(
        run("installation", "show", "A1", "--config", str(config), "--zone", "other.example.test")
    ).stdout
    assert "a.other.example.test." in out
    bad = tmp_path / "bad.toml"
    bad.write_text("zone = [\n")
    user_error(run("installation", "list", "--config", str(bad)), exit_code=2)


# -- serve ------------------------------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Settings]]:
    """controparte.serve.run (DNS and HTTP) replaced by a recorder of the settings it is
    given."""
    calls: list[Settings] = []
    monkeypatch.setattr(controparte.serve, "run", calls.append)
    yield calls


def test_serve_passes_its_flags_to_the_server(run: Run, served: list[Settings], data: Path) -> None:
    ok(
        run(
            "serve",
            "--dns",
            "127.0.0.1:5353",
            "--dns-workers",
            "2",
            "--ttl",
            "30",
            "--ns",
            "ns1=192.0.2.53,2001:db8::53",
            "--ns",
            "ns2.example.net.",
            "--zone",
            "Reg.Example.Test",
        )
    )
    [settings] = served
    assert settings.dns == HostPort("127.0.0.1", 5353)
    assert settings.dns_workers == 2
    assert settings.ttl == 30
    assert settings.zone == "reg.example.test."
    assert settings.data == data
    assert settings.allow_non_global is True
    assert settings.ns == (
        NameServer("ns1.reg.example.test.", ("192.0.2.53", "2001:db8::53")),
        NameServer("ns2.example.net.", ()),
    )


def test_serve_flags_beat_the_environment(run: Run, served: list[Settings]) -> None:
    env = {
        "CONTROPARTE_TTL": "99",
        "CONTROPARTE_DNS_WORKERS": "3",
        "CONTROPARTE_ALLOW_NON_GLOBAL": None,
    }
    ok(run("serve", "--ttl", "30", env=env))
    assert (served[0].ttl, served[0].dns_workers) == (30, 3)
    assert served[0].allow_non_global is False


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--dns", "nohost"), "--dns"),
        (("--dns-workers", "0"), "--dns-workers"),
        (("--ns", "ns1=not-an-address"), "--ns"),
    ],
)
def test_serve_with_bad_settings_exits_2_and_serves_nothing(
    run: Run, served: list[Settings], args: tuple[str, ...], expected: str
) -> None:
    assert expected in user_error(run("serve", *args), exit_code=2)
    assert served == []


# -- import -----------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_import_csv_with_columns_in_any_order(run: Run, tmp_path: Path) -> None:
    csv_file = write(
        tmp_path / "rows.csv", "\ufeffLabel, code ,port,ip\nalpha,A1,9000,192.0.2.1\n\nbeta,B2,,\n"
    )
    result = ok(run("import", str(csv_file)))
    assert "imported 2 installation(s)" in result.stdout
    listed = as_json(run("installation", "list", "--json"))
    assert isinstance(listed, list)
    assert [(i["code"], i["label"], i["kind"], i["ip"], i["port"]) for i in listed] == [
        ("A1", "alpha", "onprem", "192.0.2.1", 9000),
        ("B2", "beta", "onprem", None, None),
    ]


def test_import_json_list_of_objects(run: Run, tmp_path: Path) -> None:
    items = [
        {"code": "J1", "label": "jay", "kind": "live", "port": 9100, "ip": None},
        {"code": "J2", "label": "kay", "ipv6": "2001:db8::2"},
    ]
    result = ok(run("import", str(write(tmp_path / "rows.json", json.dumps(items)))))
    assert "imported 2" in result.stdout
    listed = as_json(run("installation", "list", "--json"))
    assert isinstance(listed, list)
    assert [(i["code"], i["kind"], i["port"], i["ipv6"]) for i in listed] == [
        ("J1", "live", 9100, None),
        ("J2", "onprem", None, "2001:db8::2"),
    ]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("rows", '[{"code": "X1", "label": "x"}]'),  # no extension: JSON by content
        ("rows.txt", "code,label\nX1,x\n"),  # otherwise CSV
    ],
)
def test_import_detects_the_format_by_content(
    run: Run, tmp_path: Path, name: str, text: str
) -> None:
    ok(run("import", str(write(tmp_path / name, text))))
    assert codes(run) == ["X1"]


def test_import_is_all_or_nothing_with_each_problem_on_its_line(run: Run, tmp_path: Path) -> None:
    add(run, "OLD", "old")
    csv_file = write(
        tmp_path / "rows.csv",
        (
            "code,label,ip,port\n"  # 1
            "A1,alpha,192.0.2.1,9000\n"  # 2: fine
            "A2,bad_label,,\n"  # 3
            '"A3","multi\n'  # 4: a quoted field over two lines
            'line",,\n'  # 5
            "A4,delta,192.0.2,\n"  # 6
            "A5,echo,,70000\n"  # 7
            "a1,foxtrot,,\n"  # 8: repeats line 2's code
            "A9,golf,,,extra\n"  # 9: structure is checked first, see below
        ),
    )
    result = run("import", str(csv_file))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{csv_file}: line 9: 5 fields, the header names 4" in result.stderr
    # Once the form is right, every value is checked and every problem reported.
    write(csv_file, csv_file.read_text().replace("A9,golf,,,extra\n", "A9,golf,,\n"))
    result = run("import", str(csv_file))
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if not line.startswith("error: ")]
    assert [p.split(": ", 2)[1] for p in problems] == [
        "line 3",
        "line 4",
        "line 6",
        "line 7",
        "line 8",
    ]
    assert ": line 3: label: " in result.stderr
    assert ": line 6: ip: " in result.stderr
    assert ": line 7: port: " in result.stderr
    assert ": line 8: code: 'a1' repeats line 2" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")
    assert "nothing imported (5 problem(s))" in result.stderr
    assert codes(run) == ["OLD"]


def test_import_conflicting_with_the_registry_imports_nothing(run: Run, tmp_path: Path) -> None:
    add(run, "A1", "alpha")
    add(run, "B1", "beta")
    rows = write(tmp_path / "rows.csv", "code,label\nN1,new\nA1,another\nN2,beta\nN3,third\n")
    result = run("import", str(rows))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert ": line 3: code: 'A1' is already registered" in result.stderr
    assert ": line 4: label: 'beta' is already used" in result.stderr
    assert codes(run) == ["A1", "B1"]


def test_import_reports_every_problem_of_the_rows_and_the_registry_in_one_pass(
    run: Run, tmp_path: Path
) -> None:
    """Before, a collision with the registry was told only once every row was fine,
    and a row repeating an earlier one's code and label only for its code."""
    add(run, "OLD", "old")
    rows = write(
        tmp_path / "rows.csv",
        "code,label,ip\n"  # 1
        "A1,alpha,\n"  # 2: fine
        "A2,bad_label,\n"  # 3: a rule broken
        "OLD,other,\n"  # 4: the registry has the code
        "A4,old,\n"  # 5: the registry has the label
        "a1,alpha,\n"  # 6: repeats line 2, code and label
        "A6,fine,192.0.2\n",  # 7: a rule broken
    )
    result = run("import", str(rows))
    assert result.exit_code == 1, result.output
    problems = [line for line in result.stderr.splitlines() if not line.startswith("error: ")]
    assert [p.split(": ", 1)[1] for p in problems] == [
        "line 3: label: must be letters, digits and hyphens only, not starting or ending"
        " with a hyphen",
        "line 4: code: 'OLD' is already registered",
        "line 5: label: 'old' is already used by another installation",
        "line 6: code: 'a1' repeats line 2",
        "line 6: label: 'alpha' repeats line 2",
        "line 7: ip: '192.0.2' is not an IPv4 address",
    ]
    assert "nothing imported (6 problem(s))" in result.stderr
    assert codes(run) == ["OLD"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("code,name\nA1,alpha\n", "line 1: unknown column(s) name"),
        ("code,ip\nA1,192.0.2.1\n", "line 1: the header needs the column(s) label"),
        ("code,label,code\nA1,a,A1\n", "line 1: repeated column(s) code"),
        ("\n\n", "line 1: no header row"),
        ('code,label\n"A1,alpha\n', "line 2: not valid CSV"),
    ],
)
def test_import_csv_header_and_form_problems(
    run: Run, tmp_path: Path, text: str, expected: str
) -> None:
    result = run("import", str(write(tmp_path / "rows.csv", text)))
    assert result.exit_code == 1
    assert expected in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"code": "A1", "label": "a"}', "line 1: expected a JSON list of objects"),
        ('[\n  {"code": "A1", "label": "a"},\n  {"code": "A2",}\n]', "line 3: not valid JSON"),
        ('[\n  {"code": "A1", "label": "a"},\n\n  "A2"\n]', "line 4: expected an object"),
        ('[{"code": "A1", "label": "a", "colour": "red"}]', "line 1: unknown field(s): colour"),
        (
            '[\n {"code": "A1",\n  "label": "a"},\n {"code": "A2", "label": "a"}]',
            "line 4: label: 'a' repeats line 2",
        ),
    ],
)
def test_import_json_problems_name_their_line(
    run: Run, tmp_path: Path, text: str, expected: str
) -> None:
    result = run("import", str(write(tmp_path / "rows.json", text)))
    assert result.exit_code == 1
    assert expected in result.stderr, result.stderr
    assert not (tmp_path / "data").exists() or codes(run) == []


def test_import_of_a_missing_or_undecodable_file(run: Run, tmp_path: Path) -> None:
    line = user_error(run("import", str(tmp_path / "missing.csv")))
    assert "cannot read" in line
    assert "missing.csv" in line
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"code,label\nA1,caf\xe9\n")
    result = run("import", str(latin))
    assert result.exit_code == 1
    assert "line 2: not UTF-8 text" in result.stderr


# -- zone export (the checks with named-checkzone are in tests/integration) --------------


def soa_serial(zone_text: str) -> int:
    [soa] = [line for line in zone_text.splitlines() if "\tSOA\t" in line]
    return int(soa.split("\t")[4].split()[2])


def test_zone_export_publishes_the_registry_and_the_serial_moves_on_change(run: Run) -> None:
    add(run, "A1", "alpha", "--ip", "192.0.2.1", "--port", "9000")
    first = ok(run("zone", "export")).stdout
    assert "alpha\t60\tIN\tA\t192.0.2.1\n" in first
    assert "_mxserver._tcp.alpha\t60\tIN\tSRV\t0 0 9000 alpha.bp.controparte.test.\n" in first
    assert ok(run("zone", "export")).stdout == first  # no change, same text
    ok(run("installation", "update", "A1", "--port", "9001"))
    second = ok(run("zone", "export")).stdout
    assert soa_serial(second) == soa_serial(first) + 1
    assert "0 0 9001 alpha.bp.controparte.test." in second


def test_zone_export_with_an_unpublishable_name_server_exits_2(run: Run) -> None:
    add(run, "A1", "alpha")
    result = run("zone", "export", env={"CONTROPARTE_NS": "ns1.bp.controparte.test."})
    assert "ns: ns1.bp.controparte.test. is inside the zone" in user_error(result, exit_code=2)


def test_zone_export_takes_the_name_servers_and_ttl_that_serve_takes(run: Run) -> None:
    add(run, "A1", "alpha", "--ip", "192.0.2.1")
    text = ok(
        run("zone", "export", "--ns", "ns1=192.0.2.53", "--ns", "ns2.example.net.", "--ttl", "300")
    ).stdout
    assert "@\t300\tIN\tNS\tns1.bp.controparte.test.\n" in text
    assert "@\t300\tIN\tNS\tns2.example.net.\n" in text
    assert "ns1\t300\tIN\tA\t192.0.2.53\n" in text
    assert "alpha\t300\tIN\tA\t192.0.2.1\n" in text


def test_version_and_short_help() -> None:
    assert ok(invoke_cli("--version")).stdout == f"controparte {__version__}\n"
    assert ok(invoke_cli("-h")).stdout.startswith("Usage: controparte [OPTIONS] COMMAND")
    assert "--log-format" in ok(invoke_cli("serve", "-h")).stdout


@pytest.mark.parametrize(
    "command",
    [[]]
    + [[name] for group, name, _ in _COMMANDS if group is app]
    + [[name] for name in ("installation", "zone", "link", "agent")]
    + [
        [group, name]
        for group, names in {
            "installation": ("add", "list", "update", "tsig-key"),
            "zone": ("export",),
            "link": ("add", "list"),
            "agent": ("listen",),
        }.items()
        for name in names
    ],
    ids=lambda words: " ".join(words) or "controparte",
)
def test_no_help_shows_a_placeholder_after_a_flag(command: list[str]) -> None:
    """Flags take no value: typer's rich help printed `<bool>` after each."""
    shown = ok(invoke_cli(*command, "--help")).stdout
    assert "--help" in shown
    assert "<bool>" not in shown
    assert "BOOLEAN" not in shown
