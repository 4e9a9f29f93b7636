"""The few calls `doctor` makes to the service's JSON API (`/v1`), over httpx: each
answer parsed into plain values or a `ControparteError` that says what went wrong."""

from __future__ import annotations

import time
import urllib.parse

import httpx

from controparte import __version__
from controparte.agent.evidence import Dial, Source
from controparte.agent.schedule import parse_retry_after
from controparte.agent.wire import error_detail
from controparte.errors import (
    ControparteError,
    MethodNotAllowedError,
    NotFoundError,
    UnsupportedError,
)

HTTP_TIMEOUT = 20.0
MAX_PROBE_WAIT = 10.0
"""The longest Retry-After the doctor waits for to ask the probe again."""
USER_AGENT = f"controparte-doctor/{__version__}"


class ServiceApi:
    """The few calls the doctor makes to the service's JSON API."""

    def __init__(self, server: str, token: str | None, *, timeout: float = HTTP_TIMEOUT) -> None:
        self.server = server.rstrip("/")
        self.token = token
        headers = {"User-Agent": USER_AGENT}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=self.server, timeout=timeout, headers=headers, follow_redirects=False
        )

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, **params: str) -> httpx.Response:
        try:
            return self._client.request(method, path, params=params or None)
        except httpx.HTTPError as exc:
            raise ControparteError(f"cannot reach {self.server}: {exc}") from None

    def _json(self, response: httpx.Response, what: str) -> object:
        if response.status_code == 404:
            raise NotFoundError(error_detail(response.content) or f"{what}: not found")
        if response.status_code != 200:
            said = error_detail(response.content) or response.reason_phrase
            raise ControparteError(
                f"{what}: {self.server} answered HTTP {response.status_code}: {said}"
            )
        try:
            return response.json()
        except ValueError:
            raise ControparteError(f"{what}: {self.server} did not answer JSON") from None

    def _object(self, response: httpx.Response, what: str) -> dict[str, object]:
        body = self._json(response, what)
        if not isinstance(body, dict):
            raise ControparteError(f"{what}: {self.server} did not answer a JSON object")
        return {str(k): v for k, v in body.items()}

    def installation(self, code: str) -> dict[str, object]:
        """The service's view of `code`: the full record with a token, else the public
        view."""
        quoted = urllib.parse.quote(code, safe="")
        if self.token is None:
            return self.resolve(code)
        return self._object(
            self._request("GET", f"/v1/installations/{quoted}"), f"installation {code}"
        )

    def resolve(self, name: str) -> dict[str, object]:
        quoted = urllib.parse.quote(name, safe="")
        return self._object(self._request("GET", f"/v1/resolve/{quoted}"), f"resolve {name}")

    def links(self, code: str) -> list[dict[str, object]]:
        """The links where `code` is caller or callee. ControparteError when the
        service has no links API."""
        response = self._request("GET", "/v1/links", code=code)
        if response.status_code in (404, 405) and _no_route(response):
            raise ControparteError(
                f"{self.server} has no links API (/v1/links): name the counterpart with"
                " --to and the feature with --feature"
            )
        body = self._json(response, f"links of {code}")
        items = body.get("links") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise ControparteError(f"links of {code}: {self.server} did not answer a list")
        return [{str(k): v for k, v in i.items()} for i in items if isinstance(i, dict)]

    def probe(self, code: str, *, sleep: float = MAX_PROBE_WAIT) -> Dial:
        """The service's probe of this installation's own public port; why not, when
        the service does not probe."""
        if self.token is None:
            return Dial.none(
                Source.SERVICE, "no --token-file: the probe needs this installation's token"
            )
        path = f"/v1/installations/{urllib.parse.quote(code, safe='')}/probe"
        for attempt in range(2):
            try:
                response = self._request("POST", path)
            except ControparteError as exc:
                return Dial.none(Source.SERVICE, str(exc))
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if response.status_code == 429 and attempt == 0 and wait is not None and wait <= sleep:
                time.sleep(wait)
                continue
            break
        if response.status_code == 200:
            try:
                return Dial.from_json(Source.SERVICE, response.json())
            except ValueError:
                return Dial.none(Source.SERVICE, f"{self.server} did not answer a probe result")
        said = error_detail(response.content) or response.reason_phrase
        return Dial.none(
            Source.SERVICE, f"the service answered HTTP {response.status_code}: {said}"
        )


def _no_route(response: httpx.Response) -> bool:
    """True for the answer of a server without the route: not an error of the API's
    (which always names its `error` kind), or the API's own word that it serves no such
    path or method (`UnsupportedError` and its kin)."""
    try:
        body = response.json()
    except ValueError:
        return True
    if not (isinstance(body, dict) and "error" in body):
        return True
    return body["error"] in (UnsupportedError.__name__, MethodNotAllowedError.__name__)
