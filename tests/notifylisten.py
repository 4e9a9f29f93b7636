"""NOTIFY in the tests: a small "secondary" (`NotifyListener`: a dnspython UDP
listener on a free loopback port, in a thread, that records every NOTIFY it gets, its
TSIG verified with the key it knows, and answers as it is told: acknowledge, stay
silent, refuse, BADSIG), and readers of the notifier's metrics."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig

from controparte.service.metrics import Family, MetricsSource
from tests.processes import HOST

WAIT = 20.0  # seconds: a bound on waiting for an event, never a speed assertion


@dataclass(frozen=True, slots=True)
class Received:
    """One NOTIFY as the secondary read it: when (time.monotonic), from where, the
    message (its TSIG verified when the secondary has a key), and its SOA serial."""

    at: float
    source: tuple[str, ...]
    message: dns.message.Message

    @property
    def serial(self) -> int | None:
        for rrset in self.message.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
        return None


Reply = Callable[[int, dns.message.Message, bytes], bytes | None]
"""(how many NOTIFYs received so far, counting this one; this one, as read; its
bytes) -> the answer, or None to stay silent."""


def acknowledge(_count: int, notify: dns.message.Message, _wire: bytes) -> bytes:
    """NOERROR, the question echoed, signed when the NOTIFY was (RFC 1996 4)."""
    return dns.message.make_response(notify).to_wire()


def refuse(_count: int, notify: dns.message.Message, _wire: bytes) -> bytes:
    response = dns.message.make_response(notify)
    response.set_rcode(dns.rcode.REFUSED)
    return response.to_wire()


def bad_signature(_count: int, _notify: dns.message.Message, wire: bytes) -> bytes:
    """NOTAUTH with TSIG error BADSIG, unsigned (RFC 8945 5.2.2): what a secondary
    whose secret differs answers."""
    bare = dns.message.from_wire(wire, keyring=False)
    response = dns.message.make_response(bare)  # unsigned: `bare` has no key
    response.set_rcode(dns.rcode.NOTAUTH)
    assert bare.tsig is not None
    tsig = bare.tsig[0]
    assert isinstance(tsig, dns.rdtypes.ANY.TSIG.TSIG)
    response.tsig = dns.rrset.from_rdata(
        bare.tsig.name, 0, tsig.replace(mac=b"", error=dns.rcode.BADSIG, other=b"")
    )
    return response.to_wire()


def silent_first(tries: int) -> Reply:
    """Silent for the first `tries` NOTIFYs, then acknowledge."""
    return lambda count, notify, wire: None if count <= tries else acknowledge(count, notify, wire)


class NotifyListener:
    """The secondary on `host` (default HOST), port `port`; `key` verifies the NOTIFYs
    and signs the answers (a NOTIFY that does not verify is recorded in `errors`,
    unanswered). `close` ends it."""

    def __init__(
        self, key: dns.tsig.Key | None = None, reply: Reply = acknowledge, host: str = HOST
    ) -> None:
        self.host = host
        self.key = key
        self.reply = reply
        self.received: list[Received] = []
        self.errors: list[str] = []
        self._changed = threading.Condition()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="notify-listener", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """host:port (`[v6]:port`), as the setting `notify` takes it and metrics name it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, source = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            try:
                message = dns.message.from_wire(wire, keyring=self.key or False)
            except dns.exception.DNSException as exc:
                with self._changed:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    self._changed.notify_all()
                continue
            with self._changed:
                self.received.append(Received(at, tuple(map(str, source[:2])), message))
                count = len(self.received)
                self._changed.notify_all()
            answer = self.reply(count, message, wire)
            if answer is not None:
                self._sock.sendto(answer, source)

    def wait_for(
        self, done: Callable[[list[Received]], bool], timeout: float = WAIT
    ) -> list[Received]:
        """What was received once `done(received)` holds (AssertionError after
        `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    serials = [r.serial for r in self.received]
                    raise AssertionError(
                        f"not seen in {timeout} s; NOTIFYs with serials {serials},"
                        f" errors {self.errors}"
                    )
                self._changed.wait(left)
            return list(self.received)

    def wait_serial(self, serial: int, timeout: float = WAIT) -> list[Received]:
        """Until a NOTIFY carrying `serial` has come."""
        return self.wait_for(lambda got: any(r.serial == serial for r in got), timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the notifier's metrics ----------------------------------------------------------------


def values(families: list[Family]) -> dict[str, float]:
    """`name{label="value",...}` -> value, for every sample."""
    out: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sample.labels)
            out[f"{family.name}{{{labels}}}" if labels else family.name] = sample.value
    return out


def counted(secondary: str, result: str) -> str:
    """The series of NOTIFYs to `secondary` (host:port) with `result`."""
    return f'controparte_notify_total{{secondary="{secondary}",result="{result}"}}'


def acked(secondary: str) -> str:
    """The series of the serial `secondary` (host:port) acknowledged last."""
    return f'controparte_notify_acked_serial{{secondary="{secondary}"}}'


def reached(source: MetricsSource, name: str, value: float) -> Callable[[], bool]:
    """Whether `source`'s series `name` is at least `value` now."""
    return lambda: values(source.metric_families()).get(name, 0) >= value


async def until(check: Callable[[], bool], what: str, within: float = WAIT) -> None:
    """Poll `check` on the loop (which keeps running the notifier) until it holds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in {within} s")
        await asyncio.sleep(0.01)
