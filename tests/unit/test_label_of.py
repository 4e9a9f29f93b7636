"""`label_of`: the one place where `<label>.<zone>` becomes an installation label."""

from __future__ import annotations

import pytest

from controparte.model.zone import label_of

ZONE = "bp.example.test."


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("acme.bp.example.test", "acme"),
        ("acme.bp.example.test.", "acme"),
        ("ACME.BP.Example.Test", "acme"),
        ("  acme.bp.example.test  ", "acme"),
        ("a-1.bp.example.test", "a-1"),
        ("bp.example.test", None),  # the apex
        ("bp.example.test.", None),
        (".bp.example.test", None),  # an empty label
        ("x.acme.bp.example.test", None),  # deeper than one label
        ("_mxserver._tcp.acme.bp.example.test", None),
        ("acme.example.test", None),  # outside the zone
        ("acmebp.example.test", None),  # a suffix, not a parent
        ("-acme.bp.example.test", None),  # not a valid label
        ("acme-.bp.example.test", None),
        ("ac_me.bp.example.test", None),
        ("a" * 64 + ".bp.example.test", None),
        ("acme", None),
        ("", None),
    ],
)
def test_label_of(name: str, expected: str | None) -> None:
    assert label_of(name, ZONE) == expected


def test_the_zone_may_be_written_without_the_dot_or_in_capitals() -> None:
    assert label_of("acme.bp.example.test.", "BP.EXAMPLE.TEST") == "acme"


def test_the_root_zone_names_no_label() -> None:
    assert label_of("acme.", ".") is None
