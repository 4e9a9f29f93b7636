"""TCP connection slots (`dns/slots.py`) and the file-descriptor limit they must fit
(`fdlimit.py`)."""

from __future__ import annotations

import dataclasses
import resource
import subprocess
import sys

import pytest

from controparte import fdlimit
from controparte.dns.slots import PER_CLIENT, TOTAL, Slots, client_of
from controparte.settings import load_settings

CLIENTS = {
    "192.0.2.7": "192.0.2.7",
    "2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
    "2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
    "2001:db8:1:3::1": "2001:db8:1:3::/64",
    "::ffff:192.0.2.7": "192.0.2.7",
    "fe80::1%eth0": "fe80::/64",
    "-": "-",
}


@pytest.mark.parametrize(("address", "client"), CLIENTS.items())
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(address: str, client: str) -> None:
    assert client_of(address) == client


def test_one_client_cannot_take_every_slot() -> None:
    slots = Slots(total=5, per_client=3)
    assert [slots.take("a") for _ in range(4)] == [True, True, True, False]
    assert slots.take("b") and slots.take("b")
    assert not slots.take("c")  # every slot is taken
    assert slots.refused == {TOTAL: 1, PER_CLIENT: 1}
    assert (slots.open, slots.clients()) == (5, 2)
    slots.give("a")
    assert slots.take("c")
    for client in ("a", "a", "b", "b", "c"):
        slots.give(client)
    assert (slots.open, slots.clients()) == (0, 0)
    assert slots.take("a")


SETTINGS = load_settings(env={})


@pytest.mark.parametrize(
    ("limit", "total", "per_client", "warned"),
    [
        (resource.RLIM_INFINITY, 1024, 16, False),
        (1024 + fdlimit.RESERVE, 1024, 16, False),
        (1024, 1024 - fdlimit.RESERVE, 16, True),
        (fdlimit.RESERVE + 10, 10, 10, True),
        (8, 1, 1, True),
    ],
)
def test_the_tcp_limits_fit_the_descriptor_limit(
    limit: int, total: int, per_client: int, warned: bool
) -> None:
    fitted, warning = fdlimit.fit(SETTINGS, limit)
    assert (fitted.tcp_max_connections, fitted.tcp_max_connections_per_client) == (
        total,
        per_client,
    )
    assert (warning is not None) == warned
    if warning is not None:
        assert f"({limit}," in warning and "CONTROPARTE_TCP_MAX_CONNECTIONS" in warning
    assert (
        dataclasses.replace(fitted, tcp_max_connections=1024, tcp_max_connections_per_client=16)
        == SETTINGS
    )


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    """In a child whose soft limit starts low: it ends at the hard limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    code = (
        "import resource; from controparte import fdlimit;"
        "print(fdlimit.raise_soft_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard)),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.split() == [str(hard), str(hard)]
