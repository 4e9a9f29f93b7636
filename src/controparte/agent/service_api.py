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

    def _request(
        self, method: str, path: str, body: object = None, **params: str
    ) -> httpx.Response:
        try:
            return self._client.request(method, path, params=params or None, json=body)
        except httpx.HTTPError as exc:
            raise ControparteError(f"cannot reach {self.server}: {exc}") from None

    def _post_waiting(self, path: str, body: object, sleep: float) -> httpx.Response:
        """POST `body` to `path`; on a 429 whose Retry-After is at most `sleep` seconds,
        wait that long and ask once more."""
        response = self._request("POST", path, body)
        wait = parse_retry_after(response.headers.get("Retry-After"))
        if response.status_code == 429 and wait is not None and wait <= sleep:
            time.sleep(wait)
            response = self._request("POST", path, body)
        return response

    def _refused(self, response: httpx.Response) -> str:
        """Why the service did not do what was asked, from its error answer."""
        said = error_detail(response.content) or response.reason_phrase
        return f"the service answered HTTP {response.status_code}: {said}"

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

    def _list(
        self, response: httpx.Response, what: str, key: str, no_api: str
    ) -> list[dict[str, object]]:
        """The objects listed under `key` in the answer (or the answer itself, a list).
        ControparteError `no_api` when the service has no such route."""
        if response.status_code in (404, 405) and _no_route(response):
            raise ControparteError(no_api)
        body = self._json(response, what)
        items = body.get(key) if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise ControparteError(f"{what}: {self.server} did not answer a list")
        return [{str(k): v for k, v in i.items()} for i in items if isinstance(i, dict)]

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

    def counterparts(self, code: str) -> list[dict[str, object]]:
        """Every installation linked to `code`, either direction, as the registry holds
        it (`GET /v1/installations/{code}/counterparts`): code, label, fqdn, kind, ip,
        ipv6, port, private_port, last_seen, stale, stale_after, updated,
        agent_version and links [{feature, a, b}]. ControparteError when the service
        cannot be used (no such API, no credential, unreachable)."""
        quoted = urllib.parse.quote(code, safe="")
        response = self._request("GET", f"/v1/installations/{quoted}/counterparts")
        return self._list(
            response,
            f"counterparts of {code}",
            "counterparts",
            f"{self.server} has no counterparts API (/v1/installations/{{code}}/counterparts):"
            " it is older than this doctor",
        )

    def links(self, code: str) -> list[dict[str, object]]:
        """The links where `code` is caller or callee. ControparteError when the
        service has no links API."""
        response = self._request("GET", "/v1/links", code=code)
        return self._list(
            response,
            f"links of {code}",
            "links",
            f"{self.server} has no links API (/v1/links): name the counterpart with --to and"
            " the feature with --feature",
        )

    def probe(self, code: str, *, sleep: float = MAX_PROBE_WAIT) -> Dial:
        """The service's probe of this installation's own public port; why not, when
        the service does not probe."""
        if self.token is None:
            return Dial.none(
                Source.SERVICE, "no --token-file: the probe needs this installation's token"
            )
        path = f"/v1/installations/{urllib.parse.quote(code, safe='')}/probe"
        try:
            response = self._post_waiting(path, None, sleep)
        except ControparteError as exc:
            return Dial.none(Source.SERVICE, str(exc))
        if response.status_code == 200:
            try:
                return Dial.from_json(Source.SERVICE, response.json())
            except ValueError:
                return Dial.none(Source.SERVICE, f"{self.server} did not answer a probe result")
        return Dial.none(Source.SERVICE, self._refused(response))

    def probe_counterpart(
        self, code: str, counterpart: str, *, sleep: float = MAX_PROBE_WAIT
    ) -> tuple[Dial, ...]:
        """The service's connections from outside to the registered public address(es)
        and port of `counterpart`, linked to `code` (one `Dial` per address); a single
        `Dial.none` saying why when the service did not dial (no token, not linked, no
        address registered, rate-limited, an older service, unreachable)."""

        def none(reason: str) -> tuple[Dial, ...]:
            return (Dial.none(Source.SERVICE, reason),)

        if self.token is None:
            return none("no --token-file: the service's probe needs this installation's token")
        path = f"/v1/installations/{urllib.parse.quote(code, safe='')}/probe-counterpart"
        try:
            response = self._post_waiting(path, {"counterpart": counterpart}, sleep)
        except ControparteError as exc:
            return none(str(exc))
        if response.status_code in (404, 405) and _no_route(response):
            return none(f"{self.server} does not probe counterparts (an older service)")
        if response.status_code != 200:
            return none(self._refused(response))
        try:
            body = response.json()
            reports = body["reports"]
            dials = tuple(Dial.from_json(Source.SERVICE, r) for r in reports)
        except (ValueError, KeyError, TypeError):
            return none(f"{self.server} did not answer dial reports")
        return dials or none(f"{self.server} dialled nothing")


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
