"""Response rate limiting on the real server (`controparte serve`, RRL forced on over
loopback, 5 answers a second): a burst from one source is limited (some answers
dropped, the slips truncated with no answer section), that source is still answered
over TCP by `dig` and `kdig`, other traffic within its budget is answered, and the
metrics count what the client saw. Small and bounded: one burst of 40 queries."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.rcode
import httpx
import pytest

from tests.integration.conftest import STANDARD_ENV, ZONE, seed_standard
from tests.integration.digtools import TOOLS, run
from tests.processes import HOST
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

RATE = 5
BURST = 40
RRL_ENV = {
    **STANDARD_ENV,
    "CONTROPARTE_RRL": "on",
    "CONTROPARTE_RRL_RATE": str(RATE),
    "CONTROPARTE_RRL_ERRORS_RATE": "2",
    "CONTROPARTE_RRL_SLIP": "2",
}
OTHER_SOURCE = "127.0.1.1"  # another /24 of the loopback network


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("data"), RRL_ENV)
    with server.registry() as registry:
        seed_standard(registry)
    with server:
        server.wait_http()
        yield server
        assert not server.died(), f"the server exited by itself:\n{server.log_text()}"


def exchange(
    server: ServerProcess, queries: list[dns.message.Message], source: str = HOST
) -> list[dns.message.Message]:
    """Send `queries` back to back over UDP from `source`, then collect the responses
    that come within a second."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for query in queries:
            sock.sendto(query.to_wire(), (server.host, server.port))
        responses: list[dns.message.Message] = []
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                responses.append(dns.message.from_wire(sock.recv(65535)))
            except TimeoutError:
                break
        return responses


def queries(qname: str, count: int) -> list[dns.message.Message]:
    made: list[dns.message.Message] = []
    for i in range(count):
        query = dns.message.make_query(qname, "A")
        query.id = i + 1
        made.append(query)
    return made


def metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(server.http_url + "/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    assert len(lines) == 1, text
    return float(lines[0].split()[1])


def test_a_burst_from_one_source_is_limited_and_tcp_still_answers(server: ServerProcess) -> None:
    qname = f"alpha.{ZONE}"
    responses = exchange(server, queries(qname, BURST))
    answered = [r for r in responses if not r.flags & dns.flags.TC]
    slipped = [r for r in responses if r.flags & dns.flags.TC]
    dropped = BURST - len(responses)
    assert RATE <= len(answered) <= RATE + 1, [r.id for r in answered]  # + what 5/s adds
    assert all(r.rcode() == dns.rcode.NOERROR and len(r.answer) == 1 for r in answered)
    limited = BURST - len(answered)
    assert limited // 2 <= len(slipped) <= limited // 2 + 1  # every second one slips
    for slip in slipped:
        assert (slip.answer, slip.authority, slip.additional) == ([], [], [])
        assert str(slip.question[0].name) == qname
    assert dropped >= limited // 2 - 1 > 0
    assert len({r.id for r in responses}) == len(responses)

    assert metric(server, "controparte_dns_rrl_dropped_total") == dropped
    assert metric(server, "controparte_dns_rrl_slipped_total") == len(slipped)

    for tool in TOOLS:  # TCP is never limited: the same question from the same source
        out = run(tool, server.host, server.port, "+tcp", qname, "A")
        assert out.transport == "TCP" and out.status == "NOERROR", out.text
        assert [r.rdata for r in out.answer] == ["192.0.2.1"], out.text

    # Other traffic within its budget: another question from the same source, and the
    # same question from another prefix.
    for qname_, source in ((f"beta.{ZONE}", HOST), (qname, OTHER_SOURCE)):
        got = exchange(server, queries(qname_, RATE), source)
        assert len(got) == RATE and not any(r.flags & dns.flags.TC for r in got)
        assert all(len(r.answer) == 1 for r in got)
