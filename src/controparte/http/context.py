"""What every route of one app shares: the services, the DNS server (if any), the
metrics, the credential gate, the trusted proxies and the health watch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from starlette.requests import HTTPConnection

from controparte.http.auth import Gate
from controparte.http.clientaddr import Client, IPNetwork, parse_networks, resolve_client
from controparte.http.metrics import Metrics
from controparte.http.schemas import InstallationOut
from controparte.model import Installation
from controparte.service.health import HealthWatch, ServedZone
from controparte.service.metrics import MetricsSource
from controparte.service.services import Services


class DnsSource(MetricsSource, Protocol):
    """The DNS server of this process, as the HTTP layer sees it."""

    def served_zone(self) -> ServedZone:
        """The serial it serves and the age of its snapshot (thread-safe)."""
        ...


@dataclass(frozen=True, slots=True)
class Context:
    services: Services
    dns: DnsSource | None
    """The DNS server, when it runs in this process: its metrics and its zone."""
    metrics: Metrics
    gate: Gate
    trusted: tuple[IPNetwork, ...]
    health: HealthWatch

    @classmethod
    def of(cls, services: Services, dns: DnsSource | None = None) -> Context:
        """A new context over `services`: fresh metrics, and the gate, trusted proxies
        and health watch made from them."""
        metrics = Metrics()
        return cls(
            services=services,
            dns=dns,
            metrics=metrics,
            gate=Gate(services, metrics),
            trusted=parse_networks(services.settings.trusted_proxies),
            health=HealthWatch(services.store),
        )

    def client(self, request: HTTPConnection) -> Client:
        """The request's client, with the trusted-proxy rule applied."""
        peer = request.client.host if request.client is not None else None
        return resolve_client(
            peer,
            request.headers.getlist("forwarded"),
            request.headers.getlist("x-forwarded-for"),
            self.trusted,
        )

    def out(self, inst: Installation) -> InstallationOut:
        settings = self.services.settings
        return InstallationOut.of(inst, settings.zone, settings.stale_after)
