"""The feature catalog as a setting, its validation, the link value, and schema
migration 3 (links, firewall state) over a store made by the previous version."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controparte.errors import ConfigError, ConflictError, ValidationError
from controparte.model import Installation, Link
from controparte.plan.catalog import Needed, load_catalog, packaged_catalog, parse_catalog
from controparte.settings import load_settings
from controparte.store import Origin, open_store
from controparte.store.schema import MIGRATIONS
from controparte.store.sqlite import DB_FILE

GOOD = """\
[live]
port_range = [4000, 4999]
start_live_hosts = ["broker.example.test"]
[features.backup]
topology = "server-async"
"""


def test_the_features_setting_names_a_file_or_the_packaged_catalog(tmp_path: Path) -> None:
    assert load_settings(env={}).features is None
    path = tmp_path / "features.toml"
    assert load_settings(env={"CONTROPARTE_FEATURES": str(path)}).features == path
    config = tmp_path / "controparte.toml"
    config.write_text(f'features = "{path}"\n')
    assert load_settings(env={}, config_file=config).features == path
    assert load_settings(env={"CONTROPARTE_FEATURES": ""}).features is None
    assert load_catalog(None) is packaged_catalog()


def test_an_operator_catalog_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "features.toml"
    path.write_text(GOOD)
    catalog = load_catalog(path)
    assert catalog.live.range_text == "4000-4999"
    assert catalog.live.start_live_port == 443
    assert catalog.feature("backup").name == "backup"
    with pytest.raises(ValidationError, match=r"^feature: unknown feature 'x' \(known: backup\)"):
        catalog.feature("x")
    with pytest.raises(ConfigError, match=r"^features: cannot read"):
        load_catalog(tmp_path / "missing.toml")
    path.write_text(GOOD.replace("[4000, 4999]", "[4999, 4000]"))
    with pytest.raises(ConfigError, match=r"^features \(.*\): live.port_range must be"):
        load_catalog(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("features.backup", 'features."Back Up"'), "a feature id is"),
        (GOOD.replace("broker.example.test", "bad host;"), "is not a host name"),
        (GOOD.replace("server-async", "mesh"), "topology must be one of"),
        (GOOD.replace("port_range = [4000, 4999]", "port_range = [0, 10]"), "port number"),
        ("[features.x]\ntopology='clients'\n", "a [live] table is required"),
        (
            GOOD.replace("[features", 'start_live_hosts_needed = "some"\n[features'),
            'live.start_live_hosts_needed must be "any-of" or "all-of", got \'some\'',
        ),
        (
            GOOD.replace("[features", "start_live_hosts_needed = 2\n[features"),
            "live.start_live_hosts_needed must be",
        ),
    ],
)
def test_catalog_problems_are_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_catalog(text, "features")


def test_the_packaged_catalog_is_the_seeds() -> None:
    catalog = packaged_catalog()
    assert sorted(catalog.features) == [
        "easypass",
        "einvoice",
        "primanota",
        "realtime",
        "remote-access",
        "sprix",
    ]
    assert (catalog.live.port_low, catalog.live.port_high) == (9000, 9999)
    assert len(catalog.live.start_live_hosts) == 3
    assert catalog.live.start_live_hosts_needed is Needed.ANY_OF


@pytest.mark.parametrize(
    ("line", "needed"),
    [
        ("", Needed.ANY_OF),
        ('start_live_hosts_needed = "any-of"\n', Needed.ANY_OF),
        ('start_live_hosts_needed = "all-of"\n', Needed.ALL_OF),
    ],
)
def test_the_start_live_hosts_are_alternatives_unless_the_catalog_needs_them_all(
    line: str, needed: Needed
) -> None:
    catalog = parse_catalog(GOOD.replace("[features", line + "[features"))
    assert catalog.live.start_live_hosts_needed is needed


def test_live_check() -> None:
    live = packaged_catalog().live
    live.check(Installation.create("A", "a", kind="live", port=9000))
    live.check(Installation.create("A", "a", kind="live"))
    live.check(Installation.create("A", "a", port=80))
    with pytest.raises(ValidationError) as caught:
        live.check(Installation.create("A", "a", kind="live", port=10000))
    assert caught.value.field == "port"
    assert "9000-9999" in caught.value.rule


def test_link_values() -> None:
    link = Link.create("A-1", "B-2", "realtime")
    assert link.involves("a-1") and link.involves("B-2") and not link.involves("C")
    assert set(link.to_dict()) == {"a", "b", "feature", "created"}
    assert link == Link("A-1", "B-2", "realtime")  # the creation time is not identity
    with pytest.raises(ValidationError, match=r"^b: an installation cannot be linked to itself"):
        Link.create("A-1", "a-1", "realtime")
    with pytest.raises(ValidationError, match=r"^feature: "):
        Link.create("A-1", "B-2", "-x")
    with pytest.raises(ValidationError, match=r"^code: "):
        Link.create("A 1", "B-2", "x")


def test_migration_3_over_a_version_2_store(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    connection = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        for statement in script.sqlite.split(";"):
            if statement.strip():
                connection.execute(statement)
    connection.execute("INSERT INTO zone_state (id, serial) VALUES (1, 7)")
    now = datetime.now(UTC).isoformat()
    for code in ("A-1", "B-2"):
        connection.execute(
            "INSERT INTO installations (code, label, kind, created, updated)"
            " VALUES (?, ?, 'onprem', ?, ?)",
            (code, code.lower(), now, now),
        )
    connection.execute("PRAGMA user_version = 2")
    connection.commit()
    connection.close()

    store = open_store(tmp_path)
    try:
        assert store.count() == 2 and store.serial() == 7
        with store.transaction(Origin()) as tx:
            assert tx.add_link(Link.create("A-1", "B-2", "einvoice")) is True
            assert tx.add_link(Link.create("a-1", "b-2", "einvoice")) is False  # no case
            tx.set_firewall_seen("A-1", {"B-2": ("192.0.2.1",)}, datetime.now(UTC))
        assert [(x.a, x.b) for x in store.links("b-2")] == [("A-1", "B-2")]
        assert store.firewall_seen("a-1")["B-2"].addresses == ("192.0.2.1",)
        with (
            pytest.raises(ConflictError, match="does each installation exist"),
            store.transaction(Origin()) as tx,
        ):
            tx.add_link(Link.create("A-1", "NOBODY", "einvoice"))
        with store.transaction(Origin()) as tx:
            assert tx.remove_link("B-2", "A-1") == []
            assert [x.feature for x in tx.remove_link("A-1", "B-2", "einvoice")] == ["einvoice"]
        assert store.links() == []
    finally:
        store.close()
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS) >= 3
