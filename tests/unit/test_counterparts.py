"""Which installations are counterparts of one, and the links between them
(`service/counterparts.py:group_links`): a table, no store."""

from __future__ import annotations

import pytest

from controparte.model import Link
from controparte.service.counterparts import group_links, other_end

AZ_ST = Link("AZ-1", "ST-2", "einvoice")
AZ_ST_RT = Link("AZ-1", "ST-2", "realtime")
PA_AZ = Link("PA-3", "AZ-1", "sprix")
PA_ST = Link("PA-3", "ST-2", "einvoice")


@pytest.mark.parametrize(
    ("code", "links", "grouped"),
    [
        ("AZ-1", [], {}),
        ("AZ-1", [AZ_ST, PA_AZ, AZ_ST_RT], {"PA-3": (PA_AZ,), "ST-2": (AZ_ST, AZ_ST_RT)}),
        ("az-1", [AZ_ST], {"ST-2": (AZ_ST,)}),  # codes compare without case
        ("AZ-1", [PA_ST, AZ_ST], {"ST-2": (AZ_ST,)}),  # another pair's link is not AZ-1's
        ("ST-2", [AZ_ST, PA_ST], {"AZ-1": (AZ_ST,), "PA-3": (PA_ST,)}),
        (
            "AZ-1",
            [Link("AZ-1", "st-2", "einvoice"), Link("ST-2", "AZ-1", "realtime")],
            {"st-2": (Link("AZ-1", "st-2", "einvoice"), Link("ST-2", "AZ-1", "realtime"))},
        ),
    ],
)
def test_group_links(code: str, links: list[Link], grouped: dict[str, tuple[Link, ...]]) -> None:
    assert group_links(code, links) == grouped
    assert list(group_links(code, links)) == list(grouped)  # in the order of the codes


def test_other_end() -> None:
    assert (other_end("AZ-1", PA_AZ), other_end("pa-3", PA_AZ)) == ("PA-3", "AZ-1")
