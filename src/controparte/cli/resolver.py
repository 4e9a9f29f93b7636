"""Resolving an installation three ways, for `controparte resolve`: from the local
registry, from a server's HTTP API (`/v1/resolve/{name}`), or from DNS (A, AAAA and the
`_mxserver._tcp` SRV record).

Each returns a flat dict ready to print. The first two return the public view
(`service.status.public_view`): code, label, fqdn, kind, ip, ipv6, port, last_seen,
stale. DNS knows only what it publishes: fqdn, ip, ipv6, port and the SRV target.
Failures raise `ControparteError`s: NotFoundError for an unknown name (HTTP 404,
NXDOMAIN), a plain ControparteError for an unreachable or misbehaving server.
"""

from __future__ import annotations

import urllib.parse

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import httpx

from controparte.errors import ControparteError, NotFoundError
from controparte.model.zone import SRV_SERVICE
from controparte.service.registry import Registry
from controparte.service.status import public_view
from controparte.settings import HostPort

TIMEOUT = 5.0


def from_store(registry: Registry, name: str) -> dict[str, object]:
    """The public view of the installation named `name` (code, label or fqdn)."""
    settings = registry.settings
    return public_view(registry.find(name), settings.zone, settings.stale_after)


def from_server(url: str, name: str, *, timeout: float = TIMEOUT) -> dict[str, object]:
    """The answer of `GET <url>/v1/resolve/<name>`."""
    target = f"{url.rstrip('/')}/v1/resolve/{urllib.parse.quote(name, safe='')}"
    try:
        response = httpx.get(target, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ControparteError(f"cannot reach {url}: {exc}") from None
    if response.status_code == 404:
        raise NotFoundError(_detail(response) or f"no installation with code or label {name!r}")
    if response.status_code != 200:
        raise ControparteError(
            f"{url} answered HTTP {response.status_code}: {_detail(response) or response.text}"
        )
    try:
        found = response.json()
    except ValueError:
        raise ControparteError(f"{url} did not answer JSON") from None
    if not isinstance(found, dict):
        raise ControparteError(f"{url} did not answer a JSON object")
    return {str(k): v for k, v in found.items()}


def _detail(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else None


def query_name(name: str, zone: str) -> dns.name.Name:
    """`name` as an absolute DNS name: a single label is taken under `zone`."""
    text = name.strip()
    try:
        if "." in text.rstrip("."):
            return dns.name.from_text(text if text.endswith(".") else text + ".")
        return dns.name.from_text(text, origin=dns.name.from_text(zone))
    except dns.exception.DNSException as exc:
        raise ControparteError(f"{name!r} is not a DNS name ({exc})") from None


def _ask(
    server: HostPort, qname: dns.name.Name, rdtype: str, timeout: float
) -> dns.message.Message:
    query = dns.message.make_query(qname, rdtype)
    try:
        response, _tcp = dns.query.udp_with_fallback(
            query, server.host, timeout=timeout, port=server.port
        )
    except (dns.exception.DNSException, OSError) as exc:
        raise ControparteError(f"no answer from the DNS server {server}: {exc}") from None
    return response


def _records(response: dns.message.Message, rdtype: dns.rdatatype.RdataType) -> list[str]:
    return sorted(
        rd.to_text() for rrset in response.answer if rrset.rdtype == rdtype for rd in rrset
    )


def from_dns(
    server: HostPort, name: str, zone: str, *, timeout: float = TIMEOUT
) -> dict[str, object]:
    """What the DNS server at `server` publishes for `name` (a label, or an fqdn):
    its first A and AAAA records, and the port and target of its `_mxserver._tcp` SRV."""
    qname = query_name(name, zone)
    a = _ask(server, qname, "A", timeout)
    rcode = a.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        raise NotFoundError(f"{qname} does not exist (NXDOMAIN from {server})")
    if rcode != dns.rcode.NOERROR:
        raise ControparteError(f"{server} answered {dns.rcode.to_text(rcode)} for {qname}")
    aaaa = _ask(server, qname, "AAAA", timeout)
    srv = _ask(server, dns.name.from_text(SRV_SERVICE, origin=qname), "SRV", timeout)
    ipv4 = _records(a, dns.rdatatype.A)
    ipv6 = _records(aaaa, dns.rdatatype.AAAA)
    port: int | None = None
    target: str | None = None
    for rrset in srv.answer:
        if rrset.rdtype == dns.rdatatype.SRV:
            first = sorted(rrset, key=lambda rd: (rd.priority, -rd.weight))[0]
            port, target = int(first.port), first.target.to_text()
    return {
        "fqdn": qname.to_text(),
        "ip": ipv4[0] if ipv4 else None,
        "ipv6": ipv6[0] if ipv6 else None,
        "port": port,
        "target": target,
    }
