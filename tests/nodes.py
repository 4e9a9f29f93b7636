"""Several `controparte serve` nodes on one PostgreSQL database, as a load balancer
would have them: each a `ServerProcess` with a data directory and DNS and HTTP ports of
its own, all with the same setting `database` and the same server secret (the file
`server.key`, copied from the first node's data directory: tokens are checked, and TSIG
secrets decrypted, with it, so a credential made through one node works on every
node). Shared by the multi-node tests and the benchmark."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from controparte.service.credentials import SECRET_FILE, ServerSecret
from tests.realserver import ServerProcess

POLL = 0.005
"""Seconds between two DNS queries while waiting for an answer."""


def make_nodes(
    root: Path,
    database: str,
    count: int = 2,
    env: Mapping[str, str] | None = None,
    *,
    secret: Path | None = None,
    for_bench: bool = False,
    start_timeout: float = 20.0,
) -> list[ServerProcess]:
    """`count` nodes (not started) under `root` (`root/node-a`, `root/node-b`, ...) on
    `database`, with the settings `env` besides, each with a copy of the server secret
    in the data directory `secret` (by default the first node's, made anew)."""
    nodes: list[ServerProcess] = []
    for number in range(count):
        data = root / f"node-{chr(ord('a') + number)}"
        settings = {"CONTROPARTE_DATABASE": database, **(env or {})}
        nodes.append(
            ServerProcess(data, settings, for_bench=for_bench, start_timeout=start_timeout)
        )
        if secret is None:
            ServerSecret.load_or_create(data)
            secret = data
        else:
            data.mkdir(parents=True)
            shutil.copy2(secret / SECRET_FILE, data / SECRET_FILE)
    return nodes


@contextlib.contextmanager
def running(nodes: list[ServerProcess]) -> Iterator[list[ServerProcess]]:
    """`nodes` started together, for the block (each answering HTTP, which it serves
    after DNS); stopped after it."""
    try:
        for node in nodes:
            node.spawn()
        for node in nodes:
            node.wait_http(node.start_timeout)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def answers(node: ServerProcess, name: str, address: str, timeout: float = 0.5) -> bool:
    """Whether `node`'s DNS answers `name` (absolute) with `address` (A, or AAAA for
    an IPv6 address) now."""
    rdtype = dns.rdatatype.AAAA if ":" in address else dns.rdatatype.A
    query = dns.message.make_query(name, rdtype)
    try:
        response = dns.query.udp(query, node.host, timeout=timeout, port=node.port)
    except (dns.exception.Timeout, OSError):
        return False
    return any(
        rrset.rdtype == rdtype and rdata.to_text() == address
        for rrset in response.answer
        for rdata in rrset
    )


def time_to_answer(
    node: ServerProcess, name: str, address: str, since: float, timeout: float
) -> float:
    """Seconds from `since` (a `time.perf_counter()` reading) until `node`'s DNS
    answers `name` with `address`, polled back to back; AssertionError after
    `timeout` seconds from `since`."""
    while True:
        if answers(node, name, address):
            return time.perf_counter() - since
        if time.perf_counter() - since > timeout:
            raise AssertionError(
                f"{name} not answered {address} by {node.settings.dns} after {timeout} s"
            )
        time.sleep(POLL)
