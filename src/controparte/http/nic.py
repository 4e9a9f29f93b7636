"""`GET /nic/update`: the DynDNS2 protocol, so stock clients (ddclient, inadyn, routers)
can keep an installation's address up to date.

    GET /nic/update?hostname=<label>.<zone>[,...]&myip=<ip>[,<ip>]&myipv4=..&myipv6=..
    Authorization: Basic base64(<code, label or label.zone>:<token>)
    User-Agent: <required>

The checks, in order, and the code each failure answers (see `dyndns2.py` for the
shape of the answer):
1. `badagent`: a method other than GET, or no User-Agent.
2. `abuse`: the client's address, or the account its username names from that
   address, is blocked by the failed-authentication throttle.
3. `badauth`: no, malformed or wrong credentials (wrong ones are counted by the
   throttle and logged as the installation the username names, or `(unknown)`: never
   the username or password as presented; missing ones are only logged).
4. `notfqdn` (once) when no hostname is given; `numhost` when more than 20 are.
5. `badip <value>` (HTTP 400) when an address is malformed or may not be published.
   Without `myip`, `myipv4` and `myipv6` the update uses the request's source address
   (after the trusted-proxy rule).
6. Then per hostname, in order: `notfqdn` (not a fully qualified name), `nohost` (not
   `<label>.<zone>`), and then, decided by `dyndns2.decide` inside one registry write
   transaction (`Registry.update_many`) on the installation as it reads it: `nohost`
   (not the account's own label), `nochg <ip>` (nothing to change: not counted as
   abuse, nothing written), `good <ip>` (written in that same transaction as
   `Origin(actor=<code>, via="dyndns2", source=<client>)`, so it is in the history and
   DNS serves it at once); the code of the error table when the write is refused
   (`dnserr` for a registry rule or a conflict, `911` when the store fails).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from controparte.errors import BadAddressError, ControparteError, response_for
from controparte.http import dyndns2
from controparte.http.clientaddr import Client
from controparte.http.context import Context
from controparte.http.dyndns2 import Code
from controparte.http.metrics import DYNDNS2_RESULTS, ERRORS
from controparte.model import InstallationChange
from controparte.service.registry import RegistryReader
from controparte.store import Origin

log = logging.getLogger("controparte.http.dyndns2")

CHALLENGE = 'Basic realm="controparte", charset="UTF-8"'


class _Updater:
    """One DynDNS2 request, checked and applied (see the module)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.services = ctx.services

    def answer(
        self,
        request: Request,
        client: Client,
        *,
        hostname: str | None,
        myip: str | None,
        myipv4: str | None,
        myipv6: str | None,
    ) -> list[str]:
        """The lines of the answer."""
        if request.method != "GET" or not request.headers.get("user-agent", "").strip():
            return [Code.BADAGENT]
        gate = self.ctx.gate
        try:
            gate.guard(client)
            credentials = dyndns2.basic_credentials(request.headers.get("authorization"))
            if credentials is None:
                log.info("dyndns2 request from %s without Basic credentials", client.key)
                return [Code.BADAUTH]
            account = gate.account(*credentials, client)
        except ControparteError as exc:  # RateLimitedError: abuse; AuthError: badauth
            return [response_for(exc).dyndns2]
        hostnames = dyndns2.split_hostnames(hostname)
        if not hostnames:
            return [Code.NOTFQDN]
        if len(hostnames) > dyndns2.MAX_HOSTNAMES:
            return [Code.NUMHOST]
        allow = self.services.settings.allow_non_global
        try:
            target = dyndns2.requested_addresses(myip, myipv4, myipv6, allow_non_global=allow)
            if target is None:
                if client.address is None:
                    raise BadAddressError(
                        client.bad_hop or client.peer, "the forwarded client address"
                    )
                target = dyndns2.source_addresses(client.address, allow_non_global=allow)
        except BadAddressError as bad:
            log.info("dyndns2 update of %s from %s refused: %s", account.code, client.key, bad)
            return [dyndns2.badip_line(bad)]
        return [self._one(account.code, name, target, client) for name in hostnames]

    def _one(self, code: str, hostname: str, target: dyndns2.Addresses, client: Client) -> str:
        """The answer line for one hostname of account `code`."""
        label = dyndns2.hostname_label(hostname, self.services.settings.zone)
        if isinstance(label, Code):
            return label

        def within(
            reader: RegistryReader,
        ) -> tuple[dyndns2.Decision, Mapping[str, InstallationChange]]:
            decision = dyndns2.decide(reader.get(code), label, target)
            return decision, {} if decision.change is None else {code: decision.change}

        try:
            decision = self.services.registry.update_many(
                within, Origin(actor=code, via="dyndns2", source=client.key)
            )
        except ControparteError as exc:  # the table's code (a registry rule: dnserr)
            self.ctx.metrics.inc(ERRORS, kind=type(exc).__name__)
            log.warning("dyndns2 update of %s failed: %s", code, exc)
            return response_for(exc).dyndns2
        except Exception:
            self.ctx.metrics.inc(ERRORS, kind="internal")
            log.exception("dyndns2 update of %s failed", code)
            return Code.SERVER_ERROR
        if decision.change is not None:
            log.info("dyndns2: %s (%s) now at %s, from %s", code, label, target.text(), client.key)
        return decision.line


router = APIRouter(tags=["dyndns2"])


@router.get(
    "/nic/update",
    response_class=PlainTextResponse,
    summary="DynDNS2 update (Basic auth: code or label, and the installation's token)",
    responses={
        200: {"content": {"text/plain": {}}, "description": "One result code a line"},
        400: {"content": {"text/plain": {}}, "description": "badip <value>"},
        401: {"content": {"text/plain": {}}, "description": "badauth"},
    },
)
def nic_update(
    request: Request,
    hostname: str | None = None,
    myip: str | None = None,
    myipv4: str | None = None,
    myipv6: str | None = None,
) -> PlainTextResponse:
    return _respond(request, hostname=hostname, myip=myip, myipv4=myipv4, myipv6=myipv6)


@router.api_route(
    "/nic/update",
    methods=["POST", "PUT", "PATCH", "DELETE"],
    response_class=PlainTextResponse,
    include_in_schema=False,
)
def nic_update_wrong_method(request: Request) -> PlainTextResponse:
    """The protocol is GET only: any other method is answered `badagent`."""
    return _respond(request, hostname=None, myip=None, myipv4=None, myipv6=None)


def _respond(
    request: Request,
    *,
    hostname: str | None,
    myip: str | None,
    myipv4: str | None,
    myipv6: str | None,
) -> PlainTextResponse:
    ctx = request.app.state.controparte
    assert isinstance(ctx, Context)
    client = ctx.client(request)
    lines = _Updater(ctx).answer(
        request, client, hostname=hostname, myip=myip, myipv4=myipv4, myipv6=myipv6
    )
    for line in lines:
        ctx.metrics.inc(DYNDNS2_RESULTS, code=line.split(" ", 1)[0])
    first = Code(lines[0].split(" ", 1)[0])
    headers = {"WWW-Authenticate": CHALLENGE} if first is Code.BADAUTH else None
    return PlainTextResponse(dyndns2.body(lines), status_code=first.http_status, headers=headers)
