"""`controparte serve`: the service (DNS and HTTP) in the foreground."""

from __future__ import annotations

from controparte.cli.common import NS, REGISTRY, TTL, option, with_settings
from controparte.settings import Settings

DNS = option("--dns", str | None, metavar="HOST:PORT", help="DNS listen address (UDP and TCP).")
DNS_WORKERS = option("--dns-workers", int | None, metavar="N", help="DNS worker processes.")
HTTP = option(
    "--http",
    str | None,
    metavar="HOST:PORT",
    help="HTTP API listen address (env CONTROPARTE_HTTP; default 127.0.0.1:8080).",
)
HTTP_WORKERS = option(
    "--http-workers", int | None, metavar="N", help="HTTP processes on the same port."
)


LOG_LEVEL = option(
    "--log-level",
    str | None,
    metavar="debug|info|warning|error",
    help="The least severe log records written (env CONTROPARTE_LOG_LEVEL; default info).",
)
LOG_FORMAT = option(
    "--log-format",
    str | None,
    metavar="text|json",
    help="Log lines as text or one JSON object each (env CONTROPARTE_LOG_FORMAT; times in UTC).",
)


@with_settings(DNS, DNS_WORKERS, HTTP, HTTP_WORKERS, TTL, NS, LOG_LEVEL, LOG_FORMAT, *REGISTRY)
def serve(*, settings: Settings) -> None:
    """Serve the zone over DNS and the HTTP API (v1, DynDNS2, metrics) until SIGINT or
    SIGTERM."""
    from controparte import serve as service  # noqa: PLC0415 - the heavy part

    service.run(settings)
