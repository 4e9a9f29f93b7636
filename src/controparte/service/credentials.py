"""Credentials: installation tokens, admin tokens and TSIG secrets, kept safe at rest.

- Tokens are random (192 bits) and stored only as HMAC-SHA-256 under the server secret:
  checking one costs microseconds, and a stolen database cannot be used to log in.
- TSIG secrets must come back in clear to sign and verify, so they are stored encrypted
  (AES-256-GCM, key derived from the server secret, the installation code as
  associated data so a ciphertext cannot be moved to another installation).
- The server secret is 32 random bytes in `<data>/server.key` (mode 0600), created on
  first use; every process sharing the data directory reads the same file, and every
  node sharing a database must have a copy of it: the store records the secret's
  fingerprint (an HMAC of a fixed label under a key derived for it alone, which says
  nothing of the other keys) and a node with another secret is refused at start
  (`adopt_secret`), where it would otherwise reject every token.

Nothing here logs a token or a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controparte.errors import ConfigError
from controparte.store import private

if TYPE_CHECKING:
    from controparte.store import Store

SECRET_FILE = "server.key"  # noqa: S105 - a file name
TOKEN_BYTES = 24  # 192 bits
TOKEN_PREFIX = "cpt_"  # noqa: S105 - a public prefix
TSIG_SECRET_BYTES = 32  # hmac-sha256: a key as long as the hash
FINGERPRINT_LABEL = b"controparte server secret fingerprint"
SHOWN_FINGERPRINT = 12
"""How many hex digits of a fingerprint an error message shows."""


def _derive(master: bytes, purpose: bytes) -> bytes:
    return hmac.new(master, b"controparte/" + purpose, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class ServerSecret:
    """Keys derived from the server secret, one per purpose, and the secret's
    `fingerprint` (hex), which identifies it and reveals nothing of it or of the keys."""

    token_key: bytes
    encryption_key: bytes
    fingerprint: str

    @classmethod
    def from_master(cls, master: bytes) -> ServerSecret:
        if len(master) < 32:
            raise ConfigError("secret: the server secret must be at least 32 bytes")
        fingerprint_key = _derive(master, b"fingerprint")
        return cls(
            _derive(master, b"token-hmac"),
            _derive(master, b"tsig-aead"),
            hmac.new(fingerprint_key, FINGERPRINT_LABEL, hashlib.sha256).hexdigest(),
        )

    @classmethod
    def load_or_create(cls, data_dir: Path) -> ServerSecret:
        """Read `<data>/server.key`, creating it (0600 whatever the umask, exclusively;
        the data directory 0700) if missing."""
        path = data_dir / SECRET_FILE
        private.make_dir(data_dir)
        fd = private.create_file(path)
        if fd is not None:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
                out.flush()
                os.fsync(out.fileno())
        try:
            master = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"secret: cannot read {path}: {exc.strerror}") from None
        if len(master) < 32:
            # A concurrent creator may not have written yet: it writes 32 bytes at once.
            raise ConfigError(f"secret: {path} is shorter than 32 bytes")
        return cls.from_master(master)

    # -- tokens --------------------------------------------------------------------

    def hash_token(self, token: str) -> str:
        return hmac.new(self.token_key, token.encode(), hashlib.sha256).hexdigest()

    def token_matches(self, token: str, stored_hash: str | None) -> bool:
        """Constant-time comparison against a stored hash (False when none is stored)."""
        if stored_hash is None:
            return False
        return hmac.compare_digest(self.hash_token(token), stored_hash)

    # -- TSIG secrets --------------------------------------------------------------

    def encrypt(self, plaintext: bytes, context: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(self.encryption_key).encrypt(nonce, plaintext, context.encode())

    def decrypt(self, blob: bytes, context: str) -> bytes:
        return AESGCM(self.encryption_key).decrypt(blob[:12], blob[12:], context.encode())


def adopt_secret(store: Store, secret: ServerSecret, data_dir: Path) -> None:
    """Record the fingerprint of `secret` (read from `data_dir`) in `store` when it holds
    none (the first node to open a store, or a store of an older version: its
    credentials were made with this node's secret); a ConfigError that names the file to
    copy and shows a prefix of both fingerprints when the store's credentials were made
    with another secret."""
    recorded = store.adopt_secret_fingerprint(secret.fingerprint)
    if recorded == secret.fingerprint:
        return
    path = data_dir / SECRET_FILE
    raise ConfigError(
        f"secret: {path} is not the server secret this database's tokens and TSIG keys"
        f" were made with (its fingerprint starts {secret.fingerprint[:SHOWN_FINGERPRINT]},"
        f" the database's {recorded[:SHOWN_FINGERPRINT]}): copy {SECRET_FILE} from the"
        f" data directory of a node already serving this database to {path}, then start"
        " again"
    )


def new_token() -> str:
    """A fresh bearer token: a prefix that secret scanners recognise, 192 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def new_tsig_secret() -> bytes:
    return secrets.token_bytes(TSIG_SECRET_BYTES)


def tsig_secret_text(secret: bytes) -> str:
    return base64.b64encode(secret).decode()
