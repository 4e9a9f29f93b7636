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
from controparte.model.flowresult import MAX_PLANS

HTTP_TIMEOUT = 20.0
MAX_PROBE_WAIT = 10.0
"""The longest Retry-After the doctor waits for to ask the probe again."""
USER_AGENT = f"controparte-doctor/{__version__}"
RELAY_WAIT = 20.0
"""Seconds the doctor waits for a counterpart agent's relayed dial, by default."""
RELAY_MAX_WAIT = 30
"""The longest wait the service's long poll takes."""


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
        self,
        method: str,
        path: str,
        *,
        body: dict[str, object] | None = None,
        timeout: float | None = None,
        **params: str,
    ) -> httpx.Response:
        """One request (`body` as JSON; `timeout` instead of the client's)."""
        try:
            return self._client.request(
                method,
                path,
                params=params or None,
                json=body,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.HTTPError as exc:
            raise ControparteError(f"cannot reach {self.server}: {exc}") from None

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

    def _post_patiently(
        self, path: str, body: dict[str, object] | None = None, *, sleep: float = MAX_PROBE_WAIT
    ) -> httpx.Response:
        """POST; once more after the Retry-After of a 429 when it is at most `sleep`."""
        for _ in range(2):
            response = self._request("POST", path, body=body)
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if response.status_code != 429 or wait is None or wait > sleep:
                break
            time.sleep(wait)
        return response

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
            response = self._post_patiently(path, sleep=sleep)
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
            response = self._post_patiently(path, {"counterpart": counterpart}, sleep=sleep)
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

    def relay(
        self, code: str, counterpart: str, *, family: int | None = None, wait: float = RELAY_WAIT
    ) -> Dial:
        """`counterpart`'s agent dials this installation's registered public address and
        port, asked through the service (the relay), within `wait` seconds; the dial, or
        `Dial.none` saying why none was made (no token, not linked, no address or port
        registered, the counterpart's agent takes no relay requests, too many requests,
        no report in time, a service without the relay)."""
        source = Source.COUNTERPART
        if self.token is None:
            return Dial.none(source, "no --token-file: the relay needs this installation's token")
        path = f"/v1/installations/{urllib.parse.quote(code, safe='')}/relay"
        body: dict[str, object] = {"counterpart": counterpart}
        if family is not None:
            body["family"] = family
        deadline = time.monotonic() + wait
        try:
            response = self._post_patiently(path, body)
            if response.status_code != 202:
                return Dial.none(source, self._relay_refused(response, counterpart))
            rid = str(response.json()["id"])
            while (left := deadline - time.monotonic()) > 0:
                seconds = max(1, min(RELAY_MAX_WAIT, int(left)))
                answer = self._object(
                    self._request(
                        "GET", f"{path}/{rid}", timeout=seconds + HTTP_TIMEOUT, wait=str(seconds)
                    ),
                    "relay",
                )
                report = answer.get("report")
                if answer.get("state") == "done" and isinstance(report, dict):
                    return Dial.from_json(source, {str(k): v for k, v in report.items()})
                if answer.get("state") == "expired":
                    return Dial.none(
                        source,
                        f"{counterpart}'s agent took the relay request but sent no report in"
                        " time (it may have reached its own limit of dials per minute)",
                    )
        except (ControparteError, ValueError, KeyError, TypeError) as exc:
            return Dial.none(source, f"the relay failed: {exc}")
        return Dial.none(source, f"{counterpart}'s agent did not report within {wait:g} s")

    def report_results(self, code: str, plans: list[dict[str, object]]) -> tuple[int, int]:
        """Send a doctor run's flows (`doctor.results_plans`) to the service, at most
        `MAX_PLANS` plans a request: how many results it recorded and how many it
        skipped. ControparteError saying why when it could not be sent (no token, an
        older service, refused, unreachable); parts sent before then stay recorded."""
        if self.token is None:
            raise ControparteError("no --token-file: reporting needs this installation's token")
        path = f"/v1/installations/{urllib.parse.quote(code, safe='')}/flow-results"
        recorded = skipped = 0
        for start in range(0, len(plans), MAX_PLANS):
            response = self._request("POST", path, body={"plans": plans[start : start + MAX_PLANS]})
            if response.status_code in (404, 405) and _no_route(response):
                raise ControparteError(f"{self.server} takes no flow results (an older service)")
            answer = self._object(response, "flow results")
            counted, listed = answer.get("recorded"), answer.get("skipped")
            if not isinstance(counted, int) or not isinstance(listed, list):
                raise ControparteError(f"{self.server} did not answer what it recorded")
            recorded, skipped = recorded + counted, skipped + len(listed)
        return recorded, skipped

    def _relay_refused(self, response: httpx.Response, counterpart: str) -> str:
        """Why the service took no relay request, in words doctor can print."""
        said = error_detail(response.content) or response.reason_phrase
        status = response.status_code
        if status in (404, 405) and _no_route(response):
            return (
                f"{self.server} has no relay (an older service): {counterpart}'s agent cannot dial"
            )
        if status == 429:
            return f"the service refused the relay for now (too many requests): {said}"
        if status in (403, 409):
            return said
        return f"the service answered HTTP {status} to the relay: {said}"


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
