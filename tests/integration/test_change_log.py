"""The server logs every change of the registry in one line (what, which installation,
through which front end, from which address), a refused one only at `debug`; with
`log_format = "json"` every line of its log is one JSON object, its time in UTC. A
real server, its log read as an operator's log collector would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import remember_secret
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

ADMIN = remember_secret("admin-token-of-the-change-log-test-0123456789")
TIMEOUT = 20.0


def records(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log_text().splitlines()]


def changes(server: ServerProcess) -> list[str]:
    return [r["message"] for r in records(server) if r["logger"] == "controparte.changes"]


@pytest.mark.parametrize("level", ["info", "debug"])
def test_every_change_is_one_json_line_and_a_refusal_only_at_debug(
    tmp_path: Path, level: str
) -> None:
    env = {
        "CONTROPARTE_ADMIN_TOKEN": ADMIN,
        "CONTROPARTE_LOG_FORMAT": "json",
        "CONTROPARTE_LOG_LEVEL": level,
    }
    with ServerProcess(tmp_path / "var", env) as server:
        server.wait_http()
        admin = {"authorization": f"Bearer {ADMIN}"}
        with httpx.Client(base_url=server.http_url, timeout=TIMEOUT, headers=admin) as http:
            made = http.post("/v1/installations", json={"code": "A-1", "label": "alpha"})
            assert made.status_code == 201, made.text
            token = remember_secret(made.json()["token"])
            changed = http.patch("/v1/installations/A-1", json={"ip": "192.0.2.1"})
            assert changed.status_code == 200, changed.text
            again = http.post("/v1/installations", json={"code": "A-1", "label": "other"})
            assert again.status_code == 409, again.text
            beat = http.post(
                "/v1/installations/A-1/heartbeat",
                json={"port": 4443},
                headers={"authorization": f"Bearer {token}"},
            )
            assert beat.status_code == 200, beat.text
            assert http.delete("/v1/installations/A-1").status_code in (200, 204)
        server.stop()
        logged = records(server)
    assert all(r["time"].endswith("Z") and "T" in r["time"] for r in logged)
    from_api = "via api from 127.0.0.1 by admin"
    expected = [
        "A-1 added label=alpha kind=onprem ipv4=- ipv6=- port=- private_port=-"
        f" agent_version=- {from_api}",
        f"A-1 changed ipv4 - -> 192.0.2.1 {from_api}",
        "A-1 changed ipv4 192.0.2.1 -> 127.0.0.1, port - -> 4443 via heartbeat from"
        " 127.0.0.1 by A-1",
        "A-1 removed label=alpha kind=onprem ipv4=127.0.0.1 ipv6=- port=4443 private_port=-"
        f" agent_version=- {from_api}",
    ]
    assert [m for m in changes(server) if not m.startswith("refused")] == expected
    refusals = [m for m in changes(server) if m.startswith("refused")]
    if level == "debug":
        assert refusals == [
            "refused via api from 127.0.0.1 by admin: code: 'A-1' is already registered"
        ]
    else:
        assert refusals == []
    assert all(r["level"] in ("info", "debug") for r in logged if r["logger"].endswith("changes"))
