"""A mutation fuzzer for every parser that reads what the network or a user hands over:
DNS queries (the answer engine), RFC 2136 UPDATE messages, DynDNS2 query strings, import
files (CSV and JSON) and heartbeat bodies; and the compiled screen, held to the Python
walk's verdict on every input (a disagreement is a crash). Shared by the small run in `make test`
(`tests/unit/test_fuzz_parsers.py`) and the full one (`bench/fuzz_bench.py`).

Each target turns bytes into a call of the real parser. A parser may refuse its input
only with the error the contract names (`ControparteError`, the project's one error
tree, answered with a 4xx, FORMERR or `dnserr`); the DNS answer engine may refuse
nothing (it never raises). Anything else is a crash, recorded with its input.

Inputs are valid seeds mutated the usual ways (bit flips, interesting bytes, inserted,
deleted, duplicated and truncated runs, splices of two seeds, random bytes), from a
seeded generator: a run is reproducible from its seed.
"""

from __future__ import annotations

import random
import tempfile
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.name
import dns.rdatatype
import dns.update

from controparte.dns import screen
from controparte.dns.engine import Engine
from controparte.dns.update import check_zone, labels_referenced, parse_request
from controparte.dns.zone import load_zone
from controparte.errors import ControparteError
from controparte.http.dyndns2 import (
    basic_credentials,
    hostname_label,
    requested_addresses,
    split_hostnames,
)
from controparte.http.heartbeat import read_body
from controparte.model.importfile import parse_import
from controparte.model.zone import ZoneConfig
from controparte.service import Registry
from controparte.settings import Settings, load_settings
from controparte.store import open_store

INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x2C, 0x22, 0x5C, 0x0A, 0x25, 0x3D, 0x26)
MAX_KEPT = 5
"""Crashes kept per target (the first ones; all are counted)."""


@dataclass(frozen=True)
class Target:
    """One parser: its seeds, the call, and the errors it may refuse input with."""

    name: str
    seeds: tuple[bytes, ...]
    call: Callable[[bytes], object]
    refusals: tuple[type[BaseException], ...] = (ControparteError,)


@dataclass
class Outcome:
    """What a run of one target found."""

    name: str
    inputs: int = 0
    refused: int = 0
    crashes: int = 0
    kept: list[tuple[bytes, str]] = field(default_factory=list)
    seconds: float = 0.0


def mutate(rng: random.Random, seeds: tuple[bytes, ...]) -> bytes:
    """One input: a seed changed one to four times, or random bytes (1 in 16)."""
    if rng.random() < 1 / 16:
        return rng.randbytes(rng.randrange(0, 600))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randrange(1, 5)):
        how = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if how == 0 and data:  # flip bits
            spot = min(at, len(data) - 1)
            data[spot] ^= 1 << rng.randrange(8)
        elif how == 1 and data:  # an interesting byte
            data[min(at, len(data) - 1)] = rng.choice(INTERESTING)
        elif how == 2:  # insert random bytes
            data[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif how == 3 and data:  # delete a run
            del data[at : at + rng.randrange(1, 17)]
        elif how == 4 and data:  # duplicate a run
            run = bytes(data[at : at + rng.randrange(1, 33)])
            data[at:at] = run * rng.randrange(1, 20)
        elif how == 5:  # truncate
            del data[at:]
        else:  # splice another seed in
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            data[at:] = other[cut:]
    return bytes(data)


def run(target: Target, count: int, seed: int) -> Outcome:
    """`count` mutated inputs through `target`; every unexpected exception counted."""
    rng = random.Random(f"{target.name}:{seed}")
    found = Outcome(target.name)
    start = time.perf_counter()
    for _ in range(count):
        data = mutate(rng, target.seeds)
        found.inputs += 1
        try:
            target.call(data)
        except target.refusals:
            found.refused += 1
        except Exception:
            found.crashes += 1
            if len(found.kept) < MAX_KEPT:
                found.kept.append((data, traceback.format_exc(limit=6)))
    found.seconds = time.perf_counter() - start
    return found


# -- the targets ---------------------------------------------------------------------------


def _queries(zone: str) -> tuple[bytes, ...]:
    seeds = []
    for name, rdtype in (
        ("shop", "A"),
        ("shop", "AAAA"),
        ("_mxserver._tcp.shop", "SRV"),
        ("", "SOA"),
        ("", "NS"),
        ("", "ANY"),
        ("nothere", "A"),
        ("shop", "TXT"),
    ):
        qname = dns.name.from_text(name, origin=dns.name.from_text(zone)) if name else zone
        plain = dns.message.make_query(qname, rdtype, use_edns=False)
        edns = dns.message.make_query(qname, rdtype, use_edns=0, payload=1232, want_dnssec=True)
        seeds += [plain.to_wire(), edns.to_wire()]
    return tuple(seeds)


def _updates(zone: str) -> tuple[bytes, ...]:
    seeds = []
    for label, address in (("shop", "203.0.113.9"), ("new-one", "2001:db8::9")):
        update = dns.update.UpdateMessage(zone)
        update.present(label)
        update.replace(label, 300, "A" if "." in address else "AAAA", address)
        seeds.append(update.to_wire())
        removal = dns.update.UpdateMessage(zone)
        removal.absent(label, "AAAA")
        removal.delete(label)
        seeds.append(removal.to_wire())
    return tuple(seeds)


DYNDNS2_SEEDS = (
    b"hostname=shop.bp.controparte.test&myip=203.0.113.9",
    b"hostname=shop.bp.controparte.test,other.bp.controparte.test&myip=203.0.113.9,2001:db8::9",
    b"hostname=shop.bp.controparte.test&myipv4=203.0.113.9&myipv6=2001:db8::9&wildcard=NOCHG",
    b"hostname=%73hop.bp.controparte.test&myip=&auth=QTE6c2VjcmV0",
)
CSV_SEEDS = (
    b"code,label,kind,ip,ipv6,port\nAZ-1,azienda,onprem,203.0.113.10,2001:db8::10,4443\n"
    b"CL-4,cloudstudio,live,192.0.2.40,,9104\n",
    b'code,label\n"A,1",x\nB-2,"quoted ""label"""\n',
)
JSON_SEEDS = (
    b'[{"code": "AZ-1", "label": "azienda", "kind": "onprem", "ip": "203.0.113.10",'
    b' "port": 4443}, {"code": "CL-4", "label": "cloudstudio", "kind": "live",'
    b' "ipv6": "2001:db8::40", "port": 9104}]',
    b'{"installations": [{"code": "X-1", "label": "x"}]}',
)
HEARTBEAT_SEEDS = (
    b'{"port": 8443, "private_port": 8000, "agent_version": "1.0"}',
    b'{"port": 9443}',
    b'{"port": 8443, "ip": "203.0.113.9", "ipv6": "2001:db8::9", "extra": [1, {"a": null}]}',
)


def _dyndns2(zone: str, data: bytes) -> None:
    """A DynDNS2 query string through every parser the route uses (as Starlette hands
    the query string over: decoded as Latin-1, then split)."""
    params = dict(urllib.parse.parse_qsl(data.decode("latin-1"), keep_blank_values=True))
    for hostname in split_hostnames(params.get("hostname")):
        hostname_label(hostname, zone)
    requested_addresses(
        params.get("myip"), params.get("myipv4"), params.get("myipv6"), allow_non_global=True
    )
    basic_credentials("Basic " + params.get("auth", ""))


def _update(origin: dns.name.Name, data: bytes) -> None:
    request = parse_request(data)
    check_zone(request, origin)
    labels_referenced(request, origin)


def _screens_agree(data: bytes) -> None:
    """The compiled screen's verdict is the Python walk's, updates served or not."""
    for updates in (False, True):
        compiled, python = screen.screen(data, updates), screen.python_screen(data, updates)
        if compiled != python:
            raise AssertionError(f"compiled {compiled!r}, Python {python!r}, updates {updates}")


@contextmanager
def targets() -> Iterator[list[Target]]:
    """Every target, over a registry of a few installations in a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp))
        store = open_store(settings.data)
        try:
            registry = Registry(store, settings)
            registry.add("A-1", "shop", ipv4="203.0.113.9", ipv6="2001:db8::9", port=8443)
            registry.add("L-1", "cloud", kind="live", ipv4="198.51.100.40", port=9100)
            engine = Engine(load_zone(store, ZoneConfig.from_settings(settings)))
            zone = settings.zone
            origin = dns.name.from_text(zone)
            yield [
                Target("dns-query-udp", _queries(zone), lambda d: engine.answer(d, False), ()),
                Target("dns-query-tcp", _queries(zone), lambda d: engine.answer(d, True), ()),
                Target("dns-update", _updates(zone), lambda d: _update(origin, d)),
                Target("dyndns2-query", DYNDNS2_SEEDS, lambda d: _dyndns2(zone, d)),
                Target("import-csv", CSV_SEEDS, lambda d: parse_import(d, ".csv")),
                Target("import-json", JSON_SEEDS, lambda d: parse_import(d, ".json")),
                Target(
                    "heartbeat-json", HEARTBEAT_SEEDS, lambda d: read_body(d, "application/json")
                ),
                *(
                    [Target("dns-screen", _queries(zone) + _updates(zone), _screens_agree, ())]
                    if screen.COMPILED
                    else []
                ),
            ]
        finally:
            store.close()


def _settings(data: Path) -> Settings:
    return load_settings(flags={"data": data}, env={"CONTROPARTE_ALLOW_NON_GLOBAL": "1"})
