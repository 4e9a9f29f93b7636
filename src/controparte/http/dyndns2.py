"""The DynDNS2 protocol (`GET /nic/update`), the pure part: result codes, the hostnames
and addresses of a request, and the text of the answer.

The answer is text/plain, one line per line of `lines`:
- Hostname-specific codes (`good <ip>`, `nochg <ip>`, `notfqdn`, `nohost`, `dnserr`)
  come one per hostname, in the order the hostnames were given.
- Codes about the request, the account or the system (`badagent`, `abuse`, `badauth`,
  `numhost`, `911`, and `notfqdn` when no hostname was given at all) come once, as the
  protocol says ("return codes indicating a failure with the account or the system are
  given only once").
- A malformed or unacceptable address (in `myip`, `myipv4`, `myipv6`, or the source
  address itself when it may not be published) is answered with HTTP 400 and the one
  line `badip <value>` (the value percent-encoded, so it stays one token on one line).
  `badip` is controparte's own code: the protocol has none for it, and it must never
  look like success (`good`, `nochg`) or like a hostname problem (`notfqdn`).
- HTTP status: 401 (with a Basic challenge) for `badauth`, 400 for `badip`, 200 for
  every other code (clients read the code from the body).

`good <ip>` / `nochg <ip>` name the address(es) the request set: `198.51.100.23`,
`2001:db8::23`, or both joined by a comma (dual stack in one call).

`decide` is what one hostname's update does to the account's installation (nohost,
nochg, or good with the change); the handler (`nic.py`) calls it inside the write
transaction, on the installation as that transaction reads it.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
import urllib.parse
from dataclasses import dataclass

from controparte.errors import BadAddressError, ValidationError, response_for
from controparte.model import (
    Installation,
    InstallationChange,
    label_of,
    validate_ipv4,
    validate_ipv6,
)

MAX_HOSTNAMES = 20


class Code(enum.StrEnum):
    GOOD = "good"
    NOCHG = "nochg"
    BADAUTH = "badauth"
    NOTFQDN = "notfqdn"
    NOHOST = "nohost"
    NUMHOST = "numhost"
    ABUSE = "abuse"
    BADAGENT = "badagent"
    DNSERR = "dnserr"
    SERVER_ERROR = "911"
    BADIP = "badip"

    @property
    def http_status(self) -> int:
        return {Code.BADAUTH: 401, Code.BADIP: 400}.get(self, 200)


@dataclass(frozen=True, slots=True)
class Addresses:
    """The addresses one update sets; a family left None is left as it is."""

    ipv4: str | None = None
    ipv6: str | None = None

    def text(self) -> str:
        return ",".join(a for a in (self.ipv4, self.ipv6) if a is not None)


@dataclass(frozen=True, slots=True)
class Decision:
    """One hostname's answer line, and the change to write (only with `good`)."""

    line: str
    change: InstallationChange | None = None


def decide(current: Installation | None, label: str, target: Addresses) -> Decision:
    """What the update of `label` to `target` does to the account's installation
    `current` (None: it is gone): `nohost` when `label` is not its label, `nochg <ip>`
    when it already has the requested addresses (nothing to write), else `good <ip>`
    with the change (a family not requested is left as it is). A Live installation
    placed on a gateway is reached at the gateway's addresses whatever an update says
    (the registry's write keeps them): `nochg` with the addresses served."""
    if current is None or current.label != label:
        return Decision(Code.NOHOST)
    if current.gateway is not None:  # Live, on a gateway: `LivePool.place` keeps it there
        return Decision(f"{Code.NOCHG} {Addresses(current.ipv4, current.ipv6).text()}")
    wanted = (
        current.ipv4 if target.ipv4 is None else target.ipv4,
        current.ipv6 if target.ipv6 is None else target.ipv6,
    )
    if wanted == (current.ipv4, current.ipv6):
        return Decision(f"{Code.NOCHG} {target.text()}")
    change = InstallationChange(ipv4=target.ipv4, ipv6=target.ipv6)
    return Decision(f"{Code.GOOD} {target.text()}", change)


def badip_line(error: BadAddressError) -> str:
    """The answer line for a refused address: its code from the table in `errors.py`,
    then the value percent-encoded, so it stays one token on one line."""
    value = urllib.parse.quote(error.value[:100], safe=":.,[]")
    return f"{response_for(error).dyndns2} {value}"


def _accept(value: str, *, allow_non_global: bool) -> tuple[int, str]:
    """(family, canonical text) of one requested address, or BadAddressError."""
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        raise BadAddressError(value, "not an IPv4 or IPv6 address") from None
    try:
        if parsed.version == 4:
            return 4, validate_ipv4(value, allow_non_global=allow_non_global)
        return 6, validate_ipv6(value, allow_non_global=allow_non_global)
    except ValidationError as exc:
        raise BadAddressError(value, exc.rule) from None


def requested_addresses(
    myip: str | None,
    myipv4: str | None,
    myipv6: str | None,
    *,
    allow_non_global: bool,
) -> Addresses | None:
    """The addresses named by the request, or None when it names none (then the source
    address is used). `myip` takes one address or two of different families separated
    by a comma; `myipv4` / `myipv6` one of their family. Empty parameters count as
    absent. Raises BadAddressError for a malformed value, a value of the wrong family, two
    different values for one family, or an address that may not be published."""
    found: dict[int, str] = {}

    def add(value: str, family: int | None) -> None:
        version, text = _accept(value, allow_non_global=allow_non_global)
        if family is not None and version != family:
            raise BadAddressError(value, f"not an IPv{family} address")
        if version in found and found[version] != text:
            raise BadAddressError(value, f"a second, different IPv{version} address")
        found[version] = text

    for item in (myip or "").split(","):
        if item.strip():
            add(item.strip(), None)
    if myipv4 and myipv4.strip():
        add(myipv4.strip(), 4)
    if myipv6 and myipv6.strip():
        add(myipv6.strip(), 6)
    if not found:
        return None
    return Addresses(found.get(4), found.get(6))


def source_addresses(source: str, *, allow_non_global: bool) -> Addresses:
    """The request's source address as the update (its family only)."""
    version, text = _accept(source, allow_non_global=allow_non_global)
    return Addresses(ipv4=text) if version == 4 else Addresses(ipv6=text)


def split_hostnames(param: str | None) -> list[str]:
    """The comma-separated hostnames of the `hostname` parameter, in order (an empty
    item stays, to be answered `notfqdn`); [] when none is given at all."""
    if param is None or not param.strip():
        return []
    return [item.strip() for item in param.split(",")]


def hostname_label(hostname: str, zone: str) -> str | Code:
    """The installation label that `hostname` names in `zone` (absolute, with the dot),
    or the code to answer: `notfqdn` for something that is not a fully qualified name
    (DynDNS2's own check), `nohost` for a name that is not `<label>.<zone>`
    (`model.label_of`)."""
    labels = hostname.strip().removesuffix(".").split(".")
    if len(labels) < 2 or any(not label or len(label) > 63 for label in labels):
        return Code.NOTFQDN
    label = label_of(hostname, zone)
    return Code.NOHOST if label is None else label


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(username, password) of an `Authorization: Basic ...` header; None when the
    header is missing, of another scheme, or malformed."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
        return None
    username, sep, password = decoded.partition(":")
    if not sep:
        return None
    return username, password


def body(lines: list[str]) -> str:
    """The response text: the lines, each ended by a newline."""
    return "".join(f"{line}\n" for line in lines)
