"""The dashboard's accounts and sessions.

- Passwords are kept as scrypt hashes (`hash_password`: N=2**14, r=8, p=1, a random
  16-byte salt; `scrypt$N$r$p$salt$hash`, base64), checked in constant time.
- A session is 32 random bytes (the cookie's value, URL-safe base64); the store keeps
  only its SHA-256, so a copy of the database signs nobody in. Each session has a form
  token (`csrf`) that every form of the dashboard carries and every change checks
  (a synchronizer token). A session lasts `ui_session_lifetime` seconds.
- The admin token may be exchanged for a session too: its account is `admin` (a name
  no account may take), an operator.
- Signing in with a wrong name or password, or a wrong token, says only that: which one
  was wrong is not told.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from controparte.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from controparte.model.installation import utcnow
from controparte.store import Store
from controparte.store.base import AccountRow, Role, SessionRow

ADMIN = "admin"
"""The account of a session opened with the admin token; no account may be named so."""

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""What an account's name looks like (lower case)."""

MIN_PASSWORD = 10
"""The shortest password an account may have (characters)."""

_N, _R, _P = 2**14, 8, 1
_REFUSED = "wrong name or password"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`password` hashed with scrypt, in the form the store keeps."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` (a `hash_password` result) was made of."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        found = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return scheme == "scrypt" and hmac.compare_digest(found, expected)


def session_key(cookie: str) -> str:
    """What the store keeps of a session's cookie value."""
    return hashlib.sha256(cookie.encode()).hexdigest()


_UNKNOWN = hash_password(secrets.token_urlsafe(16))
"""Checked against when the name is unknown, so that the answer takes as long."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in session: `cookie` is the value the browser holds (only when the
    session was just opened: the store does not keep it)."""

    row: SessionRow
    cookie: str = ""

    @property
    def account(self) -> str:
        return self.row.account

    @property
    def may_change(self) -> bool:
        """Whether the session may change the registry (an operator)."""
        return self.row.role is Role.OPERATOR

    def check_csrf(self, token: str) -> None:
        """Raise ForbiddenError unless `token` is the session's form token."""
        if not hmac.compare_digest(token.encode(), self.row.csrf.encode()):
            raise ForbiddenError(
                "the form's token is missing or not this session's: reload the page"
            )


class Accounts:
    """Accounts and sessions over the store; `lifetime` is a session's, in seconds."""

    def __init__(self, store: Store, lifetime: float) -> None:
        self.store = store
        self.lifetime = lifetime

    def add(self, name: str, role: Role, password: str) -> AccountRow:
        """Create the account `name`: ValidationError for a bad name or a short
        password, ConflictError when the name is taken."""
        if not NAME_RE.fullmatch(name) or name == ADMIN:
            raise ValidationError(
                "name",
                f"{name!r}: an account's name is 1 to 64 of a-z 0-9 . _ - (lower case),"
                f" starting with a letter or digit, and not {ADMIN!r}",
            )
        if len(password) < MIN_PASSWORD:
            raise ValidationError("password", f"a password has at least {MIN_PASSWORD} characters")
        account = AccountRow(name, role, hash_password(password), utcnow())
        if not self.store.add_account(account):
            raise ConflictError(f"an account named {name!r} exists already")
        return account

    def remove(self, name: str) -> None:
        """Remove the account `name` and end its sessions (NotFoundError: none)."""
        if not self.store.remove_account(name):
            raise NotFoundError(f"no account named {name!r}")

    def sign_in(self, name: str, password: str) -> Session:
        """A new session for the account `name`; AuthError for a wrong name or password."""
        account = self.store.account(name)
        stored = _UNKNOWN if account is None else account.password_hash
        if not check_password(password, stored) or account is None:
            raise AuthError(_REFUSED)
        return self.open(account.name, account.role)

    def open(self, account: str, role: Role) -> Session:
        """A new session for `account` with `role` (stored; the cookie in the result)."""
        cookie = secrets.token_urlsafe(32)
        now = utcnow()
        row = SessionRow(
            key=session_key(cookie),
            account=account,
            role=role,
            csrf=secrets.token_urlsafe(32),
            created=now,
            expires=now + timedelta(seconds=self.lifetime),
        )
        self.store.add_session(row, now)
        return Session(row, cookie)

    def session(self, cookie: str, now: datetime | None = None) -> Session | None:
        """The session whose cookie is `cookie`, if it is open and has not expired."""
        if not cookie:
            return None
        row = self.store.session(session_key(cookie), now or utcnow())
        return None if row is None else Session(row)

    def sign_out(self, cookie: str) -> None:
        self.store.end_session(session_key(cookie))
