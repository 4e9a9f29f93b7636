"""The probe's line protocol, and what a TCP connection attempt's outcome means.
Pure: text in, text out; the sockets live elsewhere (`service/probe.py` dials,
`agent/listen.py` answers, `agent/doctor_run.py` connects for `doctor`).

Why a protocol at all: "the port is open" proves only that *something* answers on the
public port. Behind a router, the port forward may point at the wrong machine (another
installation's server, a printer, the router itself). The probe proves that the public
port reaches *this installation's* machine: the listener answers a fresh nonce with a
MAC keyed by the installation's token, which only that installation's machines hold.

The exchange, ASCII, one line each way, each ending in LF:

    service  -> listener   CONTROPARTE-PROBE <nonce>
    listener -> service    CONTROPARTE-AGENT <code> <nonce> <mac>

- `<nonce>`: 32 lower-case hex digits (128 random bits), new for every probe, so an
  answer cannot be replayed.
- `<code>`: the installation code the listener runs for (shown to people; bound by the
  MAC, compared without regard to case as codes are).
- `<mac>`: 64 lower-case hex digits, HMAC-SHA256 keyed with the installation's token
  (UTF-8) over `controparte-probe-v1 <code in lower case> <nonce>`.

The service does not keep tokens (only their keyed hashes): it checks the MAC with the
token of the very request that asked for the probe (`POST /v1/installations/{code}/probe`,
Bearer), which it has just authenticated. The listener answers anyone who asks, but an
answer only proves possession of the token for that one nonce; the context string keeps
the MAC from meaning anything elsewhere.

A listener answers nothing to a line that is not a probe, and closes. A line is at most
`MAX_LINE` bytes; the reader gives up after that.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PROBE_WORD = "CONTROPARTE-PROBE"
AGENT_WORD = "CONTROPARTE-AGENT"
MAC_CONTEXT = "controparte-probe-v1"
MAX_LINE = 256
"""The longest line either side sends or reads (bytes, with the LF)."""
CONNECT_TIMEOUT = 3.0
"""Seconds a prober (the service, or an agent for the relay) waits for the connection."""
READ_TIMEOUT = 2.0
"""Seconds a prober then waits for the answer line."""

_NONCE_RE = re.compile(r"[0-9a-f]{32}")
_MAC_RE = re.compile(r"[0-9a-f]{64}")
_CODE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_nonce() -> str:
    """A fresh nonce: 32 lower-case hex digits."""
    return secrets.token_hex(16)


def probe_line(nonce: str) -> bytes:
    """What the prober sends: `CONTROPARTE-PROBE <nonce>\\n`."""
    if not _NONCE_RE.fullmatch(nonce):
        raise ValueError("a nonce is 32 lower-case hex digits")
    return f"{PROBE_WORD} {nonce}\n".encode("ascii")


def parse_probe_line(line: bytes) -> str | None:
    """The nonce of a probe line (LF or CRLF at the end, or none); None if `line` is not
    exactly a probe."""
    try:
        text = line.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        return None
    word, _, nonce = text.partition(" ")
    return nonce if word == PROBE_WORD and _NONCE_RE.fullmatch(nonce) else None


def probe_mac(token: str, code: str, nonce: str) -> str:
    """HMAC-SHA256(token, "controparte-probe-v1 <code lower> <nonce>"), hex."""
    message = f"{MAC_CONTEXT} {code.lower()} {nonce}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def answer_line(token: str, code: str, nonce: str) -> bytes:
    """The listener's answer to the probe with `nonce`."""
    return f"{AGENT_WORD} {code} {nonce} {probe_mac(token, code, nonce)}\n".encode("ascii")


@dataclass(frozen=True, slots=True)
class Answer:
    """What a probed port said. `verified`: True when a controparte listener answered
    this nonce with the right MAC for the expected installation; False when a listener
    answered, but not as that installation (another installation's machine, or an old
    token); None when nothing spoke the protocol (MxServer, another service, silence)."""

    verified: bool | None
    code: str | None = None  # the code a listener claimed, if one answered


def check_answer(line: bytes, *, token: str, code: str, nonce: str) -> Answer:
    """Judge the first line a probed port sent back (empty: it sent nothing)."""
    try:
        text = line.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        return Answer(None)
    parts = text.split(" ")
    if len(parts) != 4 or parts[0] != AGENT_WORD:
        return Answer(None)
    _, claimed, echoed, mac = parts
    if not _CODE_RE.fullmatch(claimed):
        return Answer(None)
    good = (
        _MAC_RE.fullmatch(mac) is not None
        and echoed == nonce
        and claimed.lower() == code.lower()
        and hmac.compare_digest(mac, probe_mac(token, code, nonce))
    )
    return Answer(good, claimed)


# -- what a connection attempt's outcome means -------------------------------------------


class Reach(enum.StrEnum):
    """The outcome of one TCP connection attempt, as the probe API reports it."""

    OPEN = "open"  # the handshake completed: something accepts connections there
    REFUSED = "refused"  # a TCP reset: the address answered, nothing listens (no forward)
    TIMEOUT = "timeout"  # no answer in time: dropped on the way (a firewall), or no host
    UNREACHABLE = "unreachable"  # an ICMP error or no route: rejected on the way


def classify_error(error: BaseException) -> Reach:
    """The outcome of a connection attempt that raised `error`: a timeout (of the
    socket or of the caller's deadline) is TIMEOUT, ECONNREFUSED is REFUSED, anything
    else (ICMP unreachable, prohibited, no route, a local firewall's EPERM) UNREACHABLE."""
    if isinstance(error, TimeoutError):  # socket.timeout and asyncio's are TimeoutError
        return Reach.TIMEOUT
    if isinstance(error, ConnectionRefusedError):
        return Reach.REFUSED
    if isinstance(error, OSError) and error.errno == errno.ETIMEDOUT:
        return Reach.TIMEOUT
    if isinstance(error, OSError) and error.errno == errno.ECONNREFUSED:
        return Reach.REFUSED
    return Reach.UNREACHABLE
