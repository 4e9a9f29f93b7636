"""Malformed DNS messages of every kind the screen rejects (`dns/screen.py`), and random
bytes, for the flood test and the flood benchmark (bench/flood_bench.py)."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import dns.message

OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # root, OPT, 1232, no options
BAD_OPTION = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x05\x00\x0a\x00\x09\x01"


def query(qname: str, qtype: str = "A", qid: int = 0, *, edns: int = -1) -> bytes:
    """A well-formed query's wire form."""
    message = dns.message.make_query(qname, qtype, use_edns=edns)
    message.id = qid
    return message.to_wire()


def with_header(wire: bytes, **fields: int) -> bytes:
    """`wire` with header fields replaced: flags, qd, an, ns, ar."""
    flags, qd, an, ns, ar = struct.unpack_from("!HHHHH", wire, 2)
    values = {"flags": flags, "qd": qd, "an": an, "ns": ns, "ar": ar} | fields
    packed = struct.pack("!HHHHH", *(values[k] for k in ("flags", "qd", "an", "ns", "ar")))
    return wire[:2] + packed + wire[12:]


def _name(rng: random.Random, zone: str) -> str:
    return f"x{rng.randrange(10**9)}.{zone}"


def _short(rng: random.Random, _zone: str) -> bytes:
    return rng.randbytes(rng.randrange(12))


def _response(rng: random.Random, zone: str) -> bytes:
    return with_header(query(_name(rng, zone), qid=rng.randrange(65536)), flags=0x8400)


def _opcode(rng: random.Random, zone: str) -> bytes:
    wire = query(_name(rng, zone), qid=rng.randrange(65536))
    return with_header(wire, flags=rng.choice((1, 2, 3, 4, 6, 15)) << 11)


def _qdcount(rng: random.Random, zone: str) -> bytes:
    wire = query(_name(rng, zone), qid=rng.randrange(65536))
    return with_header(wire, qd=0) if rng.random() < 0.5 else with_header(wire, qd=2)


def _question(rng: random.Random, zone: str) -> bytes:
    wire = query(_name(rng, zone), qid=rng.randrange(65536))
    return rng.choice(
        (
            wire[: rng.randrange(13, len(wire) - 4)],  # cut short
            wire[:12] + b"\x40abc\x00\x00\x01\x00\x01",  # label type 0x40
            wire[:12] + b"\x01a\xc0\x0c\x00\x01\x00\x01",  # a compression loop
        )
    )


def _qtype(rng: random.Random, zone: str) -> bytes:
    return query(_name(rng, zone), rng.choice(("OPT", "TSIG", "TKEY")), rng.randrange(65536))


def _records(rng: random.Random, zone: str) -> bytes:
    wire = query(_name(rng, zone), qid=rng.randrange(65536))
    return rng.choice(
        (
            wire + rng.randbytes(rng.randrange(1, 40)),  # trailing bytes
            with_header(wire, ar=0xFFFF),  # records announced, none there
            with_header(wire, ar=1) + BAD_OPTION,  # an option longer than its OPT
            with_header(wire, ar=2) + OPT + OPT,  # two OPT records
        )
    )


def _random(rng: random.Random, _zone: str) -> bytes:
    return rng.randbytes(rng.randrange(12, 512))


KINDS: dict[str, Callable[[random.Random, str], bytes]] = {
    "short": _short,
    "response": _response,
    "opcode": _opcode,
    "qdcount": _qdcount,
    "question": _question,
    "qtype": _qtype,
    "records": _records,
    "random": _random,
}
"""Kind -> a maker of one message of that kind (with a random ID and name) under the
zone; every kind but "random" is named after the screen's reason for it."""


def packets(kind: str, count: int, zone: str, seed: int = 1) -> list[bytes]:
    """`count` messages of `kind` under `zone`, the same for the same seed."""
    rng = random.Random(f"{kind}-{seed}")
    return [KINDS[kind](rng, zone) for _ in range(count)]
