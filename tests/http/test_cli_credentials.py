"""The command-line side of issue 3, in process: tokens shown once (`installation add`,
`installation rotate-token`, `admin-token`), `installation history`, the stale flag of
`installation list`, `resolve` from the local registry, and `serve --http`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

import controparte.serve
from controparte.errors import AuthError
from controparte.model.installation import utcnow
from controparte.service.services import open_services
from controparte.settings import HostPort, Settings, load_settings
from controparte.store import Origin, open_store
from tests.clirunner import Run, ok


def settings_of(data: Path) -> Settings:
    return load_settings(env={"CONTROPARTE_DATA": str(data)})


def authenticates(data: Path, code: str, token: str) -> bool:
    services = open_services(settings_of(data))
    try:
        services.access.authenticate(code, token)
    except AuthError:
        return False
    finally:
        services.close()
    return True


def test_add_prints_the_token_once(run: Run, data: Path) -> None:
    added = json.loads(ok(run("installation", "add", "A-1", "--label", "alpha", "--json")).stdout)
    assert added["code"] == "A-1"
    assert added["token"].startswith("cpt_")
    assert authenticates(data, "A-1", added["token"])
    plain = ok(run("installation", "add", "B-2", "--label", "beta"))
    token_lines = [line for line in plain.stdout.splitlines() if line.startswith("token")]
    assert len(token_lines) == 1
    token = token_lines[0].split()[-1]
    assert authenticates(data, "B-2", token)
    assert "shown only this once" in plain.stderr
    shown = ok(run("installation", "show", "B-2", "--json")).stdout
    assert "token" not in json.loads(shown)
    assert token not in shown


def test_rotate_token(run: Run, data: Path) -> None:
    old = json.loads(ok(run("installation", "add", "A-1", "--label", "alpha", "--json")).stdout)
    result = ok(run("installation", "rotate-token", "a-1"))
    new = result.stdout.strip()
    assert new.startswith("cpt_")
    assert new != old["token"]
    assert "shown only this once" in result.stderr
    assert authenticates(data, "A-1", new)
    assert not authenticates(data, "A-1", old["token"])
    again = json.loads(ok(run("installation", "rotate-token", "A-1", "--json")).stdout)
    assert again["code"] == "A-1"
    assert authenticates(data, "A-1", again["token"])
    assert not authenticates(data, "A-1", new)
    missing = run("installation", "rotate-token", "NOPE")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: no installation with code 'NOPE'")


def test_admin_token(run: Run, data: Path) -> None:
    result = ok(run("admin-token", "--note", "monitoring"))
    token = result.stdout.strip()
    assert token.startswith("cpt_")
    assert "shown only this once" in result.stderr
    services = open_services(settings_of(data))
    try:
        assert services.access.is_admin(token)
        assert not services.access.is_admin(token + "x")
    finally:
        services.close()


def test_history(run: Run) -> None:
    ok(run("installation", "add", "A-1", "--label", "alpha", "--ip", "192.0.2.1"))
    ok(run("installation", "update", "A-1", "--ip", "198.51.100.2", "--port", "4443"))
    ok(run("installation", "rotate-token", "A-1"))
    entries = json.loads(ok(run("installation", "history", "A-1", "--json")).stdout)
    assert [e["action"] for e in entries] == ["add", "token", "update", "token"]
    assert {e["via"] for e in entries} == {"cli"}
    assert entries[2]["old"]["ip"] == "192.0.2.1"
    assert entries[2]["new"]["ip"] == "198.51.100.2"
    table = ok(run("installation", "history", "A-1", env={"COLUMNS": "200"})).stdout
    assert "ip 192.0.2.1 -> 198.51.100.2" in table
    assert "port - -> 4443" in table
    ok(run("installation", "remove", "A-1"))
    after = json.loads(ok(run("installation", "history", "A-1", "--json")).stdout)
    assert [e["action"] for e in after][-1] == "remove"  # a removed one keeps its history
    missing = run("installation", "history", "NOPE")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: ")


def test_list_shows_stale(run: Run, data: Path) -> None:
    ok(run("installation", "add", "A-1", "--label", "alpha"))
    ok(run("installation", "add", "B-2", "--label", "beta"))
    ok(run("installation", "add", "C-3", "--label", "gamma"))
    store = open_store(data)
    try:
        with store.transaction(Origin()) as tx:
            for code, seen in (("A-1", utcnow() - timedelta(seconds=120)), ("B-2", utcnow())):
                old = tx.get(code)
                assert old is not None
                tx.update(old, replace(old, last_seen=seen))
    finally:
        store.close()
    env = {"CONTROPARTE_STALE_AFTER": "60"}
    listed = json.loads(ok(run("installation", "list", "--json", env=env)).stdout)
    assert {i["code"]: i["stale"] for i in listed} == {"A-1": True, "B-2": False, "C-3": False}
    table = ok(run("installation", "list", env=env)).stdout
    rows = {line.split()[1]: line for line in table.splitlines() if "-" in line and "│" in line}
    assert "stale" in rows["A-1"]
    assert "stale" not in rows["B-2"]
    relaxed = json.loads(
        ok(run("installation", "list", "--json", env={"CONTROPARTE_STALE_AFTER": "3600"})).stdout
    )
    assert not any(i["stale"] for i in relaxed)


def test_resolve_from_the_local_registry(run: Run) -> None:
    ok(run("installation", "add", "A-1", "--label", "alpha", "--ip", "192.0.2.1", "--port", "4443"))
    for name in ("A-1", "alpha", "alpha.bp.controparte.test."):
        found = json.loads(ok(run("resolve", name, "--json")).stdout)
        assert found == {
            "code": "A-1",
            "label": "alpha",
            "fqdn": "alpha.bp.controparte.test.",
            "kind": "onprem",
            "ip": "192.0.2.1",
            "ipv6": None,
            "port": 4443,
            "last_seen": None,
            "stale": False,
        }
    text = ok(run("resolve", "alpha")).stdout
    assert "192.0.2.1" in text
    assert "alpha.bp.controparte.test." in text
    missing = run("resolve", "nope")
    assert (missing.exit_code, missing.stdout) == (1, "")
    assert missing.stderr.startswith("error: no installation")
    both = run("resolve", "alpha", "--server", "http://127.0.0.1:1", "--dns", "127.0.0.1:1")
    assert both.exit_code == 2
    assert "not both" in both.stderr


def test_resolve_from_a_server_that_is_down_is_one_error_line(run: Run) -> None:
    from tests.processes import free_tcp_port  # noqa: PLC0415

    result = run("resolve", "alpha", "--server", f"http://127.0.0.1:{free_tcp_port()}")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach http://127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1


def test_serve_takes_http(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Settings] = []
    monkeypatch.setattr(controparte.serve, "run", calls.append)
    ok(run("serve", "--http", "127.0.0.1:18080"))
    ok(run("serve", env={"CONTROPARTE_HTTP": "127.0.0.1:18081"}))
    ok(run("serve"))
    assert [c.http for c in calls] == [
        HostPort("127.0.0.1", 18080),
        HostPort("127.0.0.1", 18081),
        HostPort("127.0.0.1", 8080),
    ]
    bad = run("serve", "--http", "nowhere")
    assert bad.exit_code == 2
    assert "--http" in bad.stderr
