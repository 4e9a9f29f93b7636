"""Who may change what: installation tokens, admin tokens, TSIG keys.

A token authorises exactly one installation's records; an admin token (from the
configuration or made by `controparte admin-token`) authorises management. TSIG keys
follow the same rule for RFC 2136: an installation key changes only its own names, an
admin key (no installation) any installation's.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.tsig

from controparte.errors import AuthError, ConflictError, NotFoundError, ValidationError
from controparte.model import Installation, validate_code
from controparte.model.installation import LABEL_RE
from controparte.service.credentials import (
    ServerSecret,
    new_token,
    new_tsig_secret,
    tsig_secret_text,
)
from controparte.settings import Settings
from controparte.store import KeyRole, Origin, Store

TSIG_ALGORITHM = "hmac-sha256"


CLOCK_MARGIN = 300.0
"""Seconds an accepted signed request is kept beyond its own time range, for the clocks
of other nodes."""


@dataclass(frozen=True, slots=True)
class TsigKeyFile:
    """A TSIG key as handed out once: name, algorithm and the secret in base64."""

    name: str
    algorithm: str
    secret: str
    code: str | None

    def nsupdate_text(self) -> str:
        """The key in the BIND `key` statement format that `nsupdate -k` reads."""
        return (
            f'key "{self.name}" {{\n\talgorithm {self.algorithm};\n\tsecret "{self.secret}";\n}};\n'
        )


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """A stored key made ready for dnspython: `code` None is a key of no installation
    (an admin update key, or a transfer key); `role` says what it may sign."""

    code: str | None
    key: dns.tsig.Key
    role: KeyRole = KeyRole.UPDATE


class Access:
    """Credentials: installation tokens, admin tokens and TSIG keys (issued, checked,
    resolved), over the store."""

    def __init__(self, store: Store, secret: ServerSecret, settings: Settings) -> None:
        self.store = store
        self.secret = secret
        self.settings = settings

    # -- installation tokens -----------------------------------------------------------

    def issue_token(self, code: str, origin: Origin | None = None) -> str:
        """Make a new token for `code`, replacing any old one; returned once, never kept."""
        token = new_token()
        with self.store.transaction(origin or Origin()) as tx:
            if tx.get(validate_code(code)) is None:
                raise NotFoundError(f"no installation with code {code!r}")
            tx.set_token_hash(code, self.secret.hash_token(token))
        return token

    def authenticate(self, code_or_label: str, token: str) -> Installation:
        """The installation that `token` belongs to, named by code or by label.
        Raises AuthError for an unknown name or a wrong token alike (no oracle)."""
        inst = self.named(code_or_label)
        if inst is None or not self.secret.token_matches(token, self.store.token_hash(inst.code)):
            raise AuthError("bad credentials: unknown installation or wrong token")
        return inst

    def named(self, code_or_label: str) -> Installation | None:
        """The installation with code or label `code_or_label`, if any."""
        return self.store.get(code_or_label) or self.store.get_by_label(code_or_label.lower())

    def authenticate_code(self, code: str, token: str) -> Installation:
        """As `authenticate`, for a name that must be a code (an API path names codes):
        NotFoundError when it is the installation's label (after the token matched).
        Reads through the store, so inside a write transaction of this thread it sees
        that transaction's view (the heartbeat writer checks tokens this way)."""
        inst = self.authenticate(code, token)
        if inst.code.lower() != code.lower():
            raise NotFoundError(f"no installation with code {code!r}")
        return inst

    # -- admin tokens ------------------------------------------------------------------

    def create_admin_token(self, note: str | None = None) -> str:
        token = new_token()
        with self.store.transaction(Origin(via="admin-token")) as tx:
            tx.add_admin_token(self.secret.hash_token(token), note)
        return token

    def is_admin(self, token: str) -> bool:
        configured = self.settings.admin_token
        if configured and hmac.compare_digest(token.encode(), configured.encode()):
            return True
        hashed = self.secret.hash_token(token)
        return any(hmac.compare_digest(hashed, h) for h in self.store.admin_token_hashes())

    # -- TSIG keys ---------------------------------------------------------------------

    def key_name(self, code: str | None, serial: str = "admin") -> str:
        zone = self.settings.zone
        return f"{code.lower()}.tsig.{zone}" if code is not None else f"{serial}.tsig.{zone}"

    def create_tsig_key(
        self, code: str | None, origin: Origin | None = None, admin_name: str = "admin"
    ) -> TsigKeyFile:
        """A new hmac-sha256 key for installation `code` (replacing its old one), or an
        admin key `<admin_name>.tsig.<zone>` when `code` is None (replacing the admin key
        of that name). The secret is stored encrypted.

        Raises ValidationError when the key name is not a valid DNS name (an admin name
        must be one DNS label), ConflictError when the name is another owner's key (an
        installation whose code is an admin key's name, or the reverse)."""
        if code is None and not LABEL_RE.fullmatch(admin_name.lower()):
            raise ValidationError("name", "an admin key name must be one DNS label (a-z 0-9 -)")
        name = self.key_name(code, admin_name.lower())
        try:
            dns.name.from_text(name)
        except dns.exception.DNSException:
            raise ValidationError("code", f"{name!r} is not a valid key name") from None
        existing = self.store.tsig_key(name)
        if existing is not None and existing.role is not KeyRole.UPDATE:
            raise ConflictError(f"the key name {name} is already used by a transfer key")
        if existing is not None and (existing.code or "").lower() != (code or "").lower():
            owner = "an admin key" if existing.code is None else f"installation {existing.code}"
            raise ConflictError(f"the key name {name} is already used by {owner}")
        secret = new_tsig_secret()
        with self.store.transaction(origin or Origin()) as tx:
            if code is not None and tx.get(validate_code(code)) is None:
                raise NotFoundError(f"no installation with code {code!r}")
            tx.set_tsig_key(name, code, TSIG_ALGORITHM, self.secret.encrypt(secret, name))
        return TsigKeyFile(name, TSIG_ALGORITHM, tsig_secret_text(secret), code)

    def create_transfer_key(self, name: str, origin: Origin | None = None) -> TsigKeyFile:
        """A new hmac-sha256 key called `name` (a domain name, as the secondary's
        configuration will name it) for zone transfers: it may transfer the zone and sign
        the queries and NOTIFYs that go with transfers, never an update. An existing
        transfer key of that name is replaced; an update key of that name is a
        ConflictError. The secret is stored encrypted."""
        try:
            absolute = dns.name.from_text(name).to_text().lower()
        except dns.exception.DNSException:
            raise ValidationError("name", f"{name!r} is not a valid key name") from None
        if absolute == ".":
            raise ValidationError("name", "a key needs a name, not the root")
        existing = self.store.tsig_key(absolute)
        if existing is not None and existing.role is not KeyRole.TRANSFER:
            raise ConflictError(f"the key name {absolute} is already used by an update key")
        secret = new_tsig_secret()
        with self.store.transaction(origin or Origin()) as tx:
            tx.set_tsig_key(
                absolute,
                None,
                TSIG_ALGORITHM,
                self.secret.encrypt(secret, absolute),
                KeyRole.TRANSFER,
            )
        return TsigKeyFile(absolute, TSIG_ALGORITHM, tsig_secret_text(secret), None)

    def accept_signed(self, name: dns.name.Name, time_signed: int, fudge: int, mac: bytes) -> bool:
        """Whether a request verified with key `name` is fresh (not accepted before, nor
        signed before the latest accepted with the key: RFC 8945 5.2.3), recording it
        when it is: the TSIG replay guard, kept in the store so that it holds across
        restarts, processes and nodes. A request is kept until its Time Signed plus
        Fudge and `CLOCK_MARGIN` have passed: after that no server whose clock is
        within the margin of ours accepts it anyway."""
        expires = time_signed + fudge + CLOCK_MARGIN
        return self.store.accept_tsig(
            name.to_text().lower(), mac, time_signed, expires, time.time()
        )

    def resolve_key(self, name: dns.name.Name) -> ResolvedKey | None:
        """The key called `name`, decrypted, or None if there is none."""
        row = self.store.tsig_key(name.to_text().lower())
        if row is None:
            return None
        secret = self.secret.decrypt(row.secret, row.name)
        return ResolvedKey(row.code, dns.tsig.Key(name, secret, row.algorithm), row.role)
