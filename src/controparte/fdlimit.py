"""The file-descriptor limit and the connection limits that must fit in it.

Every TCP connection the DNS server holds is a descriptor of the main process; past
the soft RLIMIT_NOFILE, accept() fails with EMFILE and the event loop logs an error for
each attempt, while nobody gets in. So at start the soft limit is raised to the hard
one (`raise_soft_limit`), and when the connection limits do not fit in it all the same,
`fit` lowers them to what fits and says so in one warning that names the settings.
"""

from __future__ import annotations

import dataclasses
import resource

from controparte.settings import Settings

RESERVE = 128
"""Descriptors the process needs besides its connections: the store, the log, the
listening sockets, the executors, the workers' pipes, a margin."""


def raise_soft_limit() -> int:
    """Raise the soft RLIMIT_NOFILE of this process (and of the workers it starts
    later) to the hard limit; the soft limit now (as it was when it cannot be
    raised)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # e.g. an infinite hard limit the kernel caps
            return soft
        return hard
    return soft


def fit(settings: Settings, limit: int) -> tuple[Settings, str | None]:
    """`settings` with connection limits that fit in `limit` descriptors (RESERVE
    kept aside), and a warning when they had to be lowered (None when they fit)."""
    if limit == resource.RLIM_INFINITY or settings.tcp_max_connections + RESERVE <= limit:
        return settings, None
    total = max(1, limit - RESERVE)
    fitted = dataclasses.replace(
        settings,
        tcp_max_connections=total,
        tcp_max_connections_per_client=min(settings.tcp_max_connections_per_client, total),
    )
    return fitted, (
        f"the file-descriptor limit ({limit}, RLIMIT_NOFILE) leaves room for {total} DNS TCP"
        f" connections, not tcp_max_connections={settings.tcp_max_connections}: serving with"
        f" {total}; raise the limit (ulimit -n, systemd LimitNOFILE=) or lower"
        " CONTROPARTE_TCP_MAX_CONNECTIONS"
    )
