"""`controparte installation tsig-key CODE --out FILE` and `controparte tsig-key --admin
--out FILE`, in process through typer's runner: the key file (BIND format, mode 600,
written once), the key in the store (secret encrypted), and the refusals."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import dns.name
import pytest
from typer.testing import CliRunner, Result

from controparte.cli import app
from controparte.service.services import open_services
from controparte.settings import load_settings
from controparte.store import KeyRole

ZONE = "bp.controparte.test."


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CONTROPARTE_"):
            monkeypatch.delenv(key)


def run(data: Path, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--data", str(data)], env={})


@pytest.fixture
def data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    assert run(data, "init").exit_code == 0
    added = run(data, "installation", "add", "ALPHA-1", "--label", "alpha", "--ip", "8.8.8.8")
    assert added.exit_code == 0, added.output
    return data


def secret_of(path: Path) -> str:
    found = re.search(r'secret "([^"]+)";', path.read_text())
    assert found
    return found.group(1)


def test_installation_key_file(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "alpha.key"
    result = run(data, "installation", "tsig-key", "ALPHA-1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"alpha-1.tsig.{ZONE}"
    assert out.stat().st_mode & 0o777 == 0o600
    text = out.read_text()
    assert re.fullmatch(
        rf'key "alpha-1\.tsig\.{re.escape(ZONE)}" \{{\n\talgorithm hmac-sha256;\n'
        r'\tsecret "[A-Za-z0-9+/]{43}=";\n\};\n',
        text,
    ), text
    secret = secret_of(out)
    assert len(base64.b64decode(secret)) == 32
    assert secret not in result.output  # printed nowhere but the file
    services = open_services(load_settings(env={"CONTROPARTE_DATA": str(data)}))
    try:
        row = services.store.tsig_key(f"alpha-1.tsig.{ZONE}")
        assert row is not None and row.code == "ALPHA-1"
        assert base64.b64decode(secret) not in row.secret  # encrypted at rest
        resolved = services.access.resolve_key(dns.name.from_text(f"alpha-1.tsig.{ZONE}"))
        assert resolved is not None and resolved.key.secret == base64.b64decode(secret)
    finally:
        services.close()


def test_existing_file_is_refused_and_the_key_kept(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "alpha.key"
    assert run(data, "installation", "tsig-key", "ALPHA-1", "--out", str(out)).exit_code == 0
    before = out.read_text()
    again = run(data, "installation", "tsig-key", "ALPHA-1", "--out", str(out))
    assert again.exit_code == 1
    assert "exists" in again.stderr
    assert out.read_text() == before
    services = open_services(load_settings(env={"CONTROPARTE_DATA": str(data)}))
    try:
        resolved = services.access.resolve_key(dns.name.from_text(f"alpha-1.tsig.{ZONE}"))
        assert resolved is not None
        assert resolved.key.secret == base64.b64decode(secret_of(out))  # not replaced
    finally:
        services.close()


def test_unknown_installation_leaves_no_file(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "nobody.key"
    result = run(data, "installation", "tsig-key", "NOBODY", "--out", str(out))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no installation with code 'NOBODY'")
    assert not out.exists()


def test_admin_key(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "admin.key"
    result = run(data, "tsig-key", "--admin", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"admin.tsig.{ZONE}"
    named = run(data, "tsig-key", "--admin", "--name", "Ops", "--out", str(tmp_path / "ops.key"))
    assert named.stdout.strip() == f"ops.tsig.{ZONE}"
    assert (tmp_path / "ops.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param((), "give --admin", id="without --admin"),
        pytest.param(("--admin", "--name", "a b"), "one DNS label", id="a name of two words"),
        pytest.param(
            ("--admin", "--name", "alpha-1"),
            "already used by installation ALPHA-1",
            id="an installation's key name",
        ),
    ],
)
def test_admin_key_refusals(
    data: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    assert (
        run(
            data, "installation", "tsig-key", "ALPHA-1", "--out", str(tmp_path / "alpha.key")
        ).exit_code
        == 0
    )
    out = tmp_path / "refused.key"
    result = run(data, "tsig-key", *args, "--out", str(out))
    assert result.exit_code == 1
    assert message in result.stderr
    assert not out.exists()


def test_transfer_key_file_and_role(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "nsd1.key"
    result = run(data, "tsig-key", "--transfer", "NSD1.xfr.example.test", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "nsd1.xfr.example.test."
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.read_text().startswith('key "nsd1.xfr.example.test." {\n\talgorithm hmac-sha256;')
    services = open_services(load_settings(env={"CONTROPARTE_DATA": str(data)}))
    try:
        resolved = services.access.resolve_key(dns.name.from_text("nsd1.xfr.example.test"))
        assert resolved is not None and resolved.role is KeyRole.TRANSFER
        assert resolved.code is None
        assert resolved.key.secret == base64.b64decode(secret_of(out))
    finally:
        services.close()
    # A new key of the same name replaces it; an update key's name is refused.
    again = tmp_path / "nsd1-again.key"
    assert (
        run(data, "tsig-key", "--transfer", "nsd1.xfr.example.test", "--out", str(again)).exit_code
        == 0
    )
    assert secret_of(again) != secret_of(out)
    admin = tmp_path / "admin.key"
    assert run(data, "tsig-key", "--admin", "--out", str(admin)).exit_code == 0
    clash = tmp_path / "clash.key"
    refused = run(data, "tsig-key", "--transfer", f"admin.tsig.{ZONE}", "--out", str(clash))
    assert refused.exit_code == 1
    assert "already used by an update key" in refused.stderr
    assert not clash.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("tsig-key",),
        ("tsig-key", "--admin", "--transfer", "x.example.test"),
    ],
)
def test_tsig_key_needs_admin_or_transfer(
    data: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    out = tmp_path / "k.key"
    result = run(data, *args, "--out", str(out))
    assert result.exit_code == 1
    assert "--admin" in result.stderr and "--transfer" in result.stderr
    assert not out.exists()
