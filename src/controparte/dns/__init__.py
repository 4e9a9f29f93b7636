"""The authoritative DNS server: zone snapshot, lookup, answer, fast path, sockets.

Named `controparte.dns`; never put a top-level `dns` on the path (it would shadow
dnspython).
"""
