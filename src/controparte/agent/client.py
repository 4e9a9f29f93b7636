"""One heartbeat over HTTP(S): the request out, the answer classified (`wire.classify`).

`--bind` sets the local source address of the connection (httpx's `local_address`):
on a host with several uplinks it picks the one the world should see. Without it the
environment is honoured as usual: `HTTPS_PROXY`/`NO_PROXY` for a proxy, `SSL_CERT_FILE`
for a private certificate authority.
"""

from __future__ import annotations

import httpx

from controparte import __version__
from controparte.agent.schedule import parse_retry_after
from controparte.agent.wire import HeartbeatRequest, Outcome, Retry, classify, heartbeat_url

USER_AGENT = f"controparte-agent/{__version__}"
CONNECT_TIMEOUT = 10.0
TIMEOUT = 30.0


class HeartbeatClient:
    """Sends heartbeats for one installation; reuses its connection between beats."""

    def __init__(
        self,
        server: str,
        code: str,
        *,
        bind: str | None = None,
        timeout: float = TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = heartbeat_url(server, code)
        if transport is None and bind is not None:
            transport = httpx.HTTPTransport(local_address=bind)
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    def beat(self, token: str, request: HeartbeatRequest) -> Outcome:
        """Send one heartbeat; network trouble is a `Retry`, never an exception."""
        try:
            response = self._client.post(
                self.url,
                json=request.to_json(),
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.TimeoutException as exc:
            return Retry(f"no answer from {self.url} in time ({type(exc).__name__})")
        except httpx.TransportError as exc:
            return Retry(f"cannot reach {self.url}: {exc or type(exc).__name__}")
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return classify(
            response.status_code,
            response.content,
            retry_after,
            location=response.headers.get("Location"),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HeartbeatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
