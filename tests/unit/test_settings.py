"""Settings: each source in its order, each key's parser, and errors that name where a
value came from. `settings_from` is pure, so these are plain table tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from controparte.errors import ConfigError
from controparte.settings import (
    KEYS,
    HostPort,
    Secondary,
    TransferRule,
    load_settings,
    redacted_database,
    settings_from,
)


def test_flags_beat_the_environment_beat_the_file_beat_the_default() -> None:
    file = {"ttl": 30, "negative_ttl": 31, "soa_retry": 32}
    env = {"CONTROPARTE_TTL": "40", "CONTROPARTE_NEGATIVE_TTL": "41"}
    s = settings_from({"ttl": 50}, env, file, "f.toml")
    assert (s.ttl, s.negative_ttl, s.soa_retry, s.soa_refresh) == (50, 41, 32, 3600)


@pytest.mark.parametrize(
    ("flags", "env", "file", "message"),
    [
        ({"ttl": "x"}, {}, {}, "--ttl: expected a whole number"),
        ({}, {"CONTROPARTE_TTL": "-1"}, {}, "CONTROPARTE_TTL: -1 is outside"),
        ({}, {}, {"ttl": 2**40}, "f.toml:ttl: "),
        ({}, {}, {"nonsense": 1}, "unknown key"),
        ({}, {"CONTROPARTE_ZONE": "."}, {}, "root zone"),
        ({}, {"CONTROPARTE_TRANSFER_ALLOW": "key="}, {}, "CONTROPARTE_TRANSFER_ALLOW"),
        ({}, {"CONTROPARTE_TRANSFER_ALLOW": "from=nowhere"}, {}, "not an address or network"),
        ({}, {"CONTROPARTE_TRANSFER_ALLOW": "owner=x"}, {}, "is not one of key=..., from=..."),
        ({}, {}, {"transfer_allow": [{"key": "k", "to": "x"}]}, "unknown field"),
        ({}, {}, {"transfer_allow": [{}]}, "names a key, address prefixes, or both"),
        ({}, {"CONTROPARTE_NOTIFY": "192.0.2.1:0"}, {}, "has no port"),
        ({}, {"CONTROPARTE_NOTIFY": "example.test:53"}, {}, "not an IP address"),
        ({}, {"CONTROPARTE_NOTIFY_SOURCE": "here"}, {}, "not an IP address"),
        ({}, {"CONTROPARTE_PROBE_SOURCES": "192.0.2.1,nat"}, {}, "'nat' is not an IP address"),
        ({}, {}, {"probe_sources": ["192.0.2.0/24"]}, "f.toml:probe_sources: '192.0.2.0/24'"),
        ({}, {"CONTROPARTE_JOURNAL_KEEP_ENTRIES": "-5"}, {}, "outside"),
    ],
)
def test_a_bad_value_names_its_source(
    flags: dict[str, object], env: dict[str, str], file: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from(flags, env, file, "f.toml")


def test_transfer_rules_in_text_and_in_toml() -> None:
    text = "key=NSD1.xfr.example.test ; from=192.0.2.0/24,2001:db8::/32; key=k2 from=127.0.0.1"
    s = settings_from({}, {"CONTROPARTE_TRANSFER_ALLOW": text})
    expected = (
        TransferRule("nsd1.xfr.example.test.", ()),
        TransferRule(None, ("192.0.2.0/24", "2001:db8::/32")),
        TransferRule("k2.", ("127.0.0.1/32",)),
    )
    assert s.transfer_allow == expected
    toml = [
        {"key": "NSD1.xfr.example.test"},
        {"from": ["192.0.2.0/24", "2001:db8::/32"]},
        {"key": "k2", "from": ["127.0.0.1"]},
    ]
    assert settings_from({}, {}, {"transfer_allow": toml}).transfer_allow == expected
    assert settings_from({}, {}).transfer_allow == ()  # nobody by default


def test_secondaries_to_notify() -> None:
    text = "192.0.2.1; 192.0.2.2:5301 key=xfr.example.test; [2001:db8::3]:5302; 2001:db8::4"
    s = settings_from({}, {"CONTROPARTE_NOTIFY": text})
    assert s.notify == (
        Secondary("192.0.2.1", 53),
        Secondary("192.0.2.2", 5301, "xfr.example.test."),
        Secondary("2001:db8::3", 5302),
        Secondary("2001:db8::4", 53),
    )
    assert [str(x) for x in s.notify[1:3]] == [
        "192.0.2.2:5301 key=xfr.example.test.",
        "[2001:db8::3]:5302",
    ]
    toml = [{"host": "192.0.2.2", "port": 5301, "key": "xfr.example.test"}]
    assert settings_from({}, {}, {"notify": toml}).notify == (s.notify[1],)


@pytest.mark.parametrize(
    ("env", "file", "sources"),
    [
        ({}, {}, ()),
        ({"CONTROPARTE_PROBE_SOURCES": ""}, {}, ()),
        (
            {"CONTROPARTE_PROBE_SOURCES": " 192.0.2.1, [2001:DB8::1],192.0.2.1"},
            {},
            ("192.0.2.1", "2001:db8::1"),
        ),
        ({}, {"probe_sources": ["2001:db8:0::53", "192.0.2.53"]}, ("2001:db8::53", "192.0.2.53")),
    ],
)
def test_probe_sources_are_addresses_canonical_each_once(
    env: dict[str, str], file: dict[str, object], sources: tuple[str, ...]
) -> None:
    assert settings_from({}, env, file).probe_sources == sources


def test_the_journal_is_kept_a_week_or_a_million_entries_by_default() -> None:
    s = settings_from({}, {})
    assert (s.journal_keep_entries, s.journal_keep_age) == (1_000_000, 7 * 86400.0)


def test_every_key_is_a_field_with_a_parser() -> None:
    defaults = settings_from({}, {})
    for key in KEYS:
        assert hasattr(defaults, key)
    assert defaults.dns == HostPort("127.0.0.1", 8053)


def test_load_settings_reads_the_file_named_in_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('ttl = 33\ntransfer_allow = ["key=x.example.test"]\n')
    s = load_settings(env={"CONTROPARTE_CONFIG": str(config)})
    assert s.ttl == 33
    assert s.transfer_allow == (TransferRule("x.example.test.", ()),)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(env={"CONTROPARTE_CONFIG": str(tmp_path / "missing.toml")})
    config.write_text("ttl = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={"CONTROPARTE_CONFIG": str(config)})


@pytest.mark.parametrize(
    ("given", "database", "shown"),
    [
        ("", "", ""),  # SQLite in the data directory
        ("  ", "", ""),
        (
            "postgresql://cp:sekrit@db.example.test:5433/registry",
            "postgresql://cp:sekrit@db.example.test:5433/registry",
            "postgresql://cp@db.example.test:5433/registry",
        ),
        (
            "postgres://cp@db.example.test/registry?password=sekrit&sslmode=require",
            "postgres://cp@db.example.test/registry?password=sekrit&sslmode=require",
            "postgres://cp@db.example.test/registry?sslmode=require",
        ),
    ],
)
def test_the_database_setting_and_how_it_is_shown(given: str, database: str, shown: str) -> None:
    assert settings_from({}, {"CONTROPARTE_DATABASE": given}).database == database
    assert redacted_database(database) == shown


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("mysql://cp:sekrit@db.example.test/registry", "expected a postgresql:// URL"),
        ("db.example.test", "expected a postgresql:// URL"),
        ("postgresql://cp:sek%zzrit@db.example.test/registry", "not a PostgreSQL URL libpq"),
    ],
)
def test_a_bad_database_url_is_refused_without_its_password(given: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^CONTROPARTE_DATABASE: {message}") as caught:
        settings_from({}, {"CONTROPARTE_DATABASE": given})
    assert "sek" not in str(caught.value)
