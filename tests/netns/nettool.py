"""Tiny network helpers run inside a namespace (`ip netns exec NS python nettool.py ...`);
a standalone script, importing nothing of controparte.

    nettool.py listen HOST:PORT [HOST:PORT ...]
        Accept TCP connections on each address and close them at once (a fake MxServer
        or start-live host: open, but speaking no controparte protocol). Prints
        "listening" on stdout once every socket is bound; runs until SIGTERM.
    nettool.py wait HOST:PORT SECONDS
        Exit 0 as soon as a TCP connection to HOST:PORT is accepted, 1 after SECONDS.
"""

from __future__ import annotations

import selectors
import signal
import socket
import sys
import time


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def listen(addresses: list[str]) -> int:
    selector = selectors.DefaultSelector()
    for text in addresses:
        host, port = _address(text)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        selector.register(sock, selectors.EVENT_READ)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("listening", flush=True)
    while True:
        for key, _events in selector.select():
            assert isinstance(key.fileobj, socket.socket)
            connection, _peer = key.fileobj.accept()
            connection.close()


def wait(address: str, seconds: float) -> int:
    host, port = _address(address)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return 0
        except OSError:
            time.sleep(0.05)
    return 1


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "listen":
        return listen(argv[1:])
    if len(argv) == 3 and argv[0] == "wait":
        return wait(argv[1], float(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
