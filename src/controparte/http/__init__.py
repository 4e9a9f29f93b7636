"""The HTTP service: the v1 JSON API, DynDNS2 (`/nic/update`), health and metrics.

`create_app(services, dns)` in `app.py` builds it; `serve.py` runs it under uvicorn
beside the DNS server. Pure parts: `clientaddr.py` (trusted proxies), `dyndns2.py`
(the protocol's codes and parsing), `metrics.py` (the exposition format).
"""
