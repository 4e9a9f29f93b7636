"""A local certificate authority for labs and tests (`controparte broker lab-ca DIR`):
a CA certificate, and a server certificate it signs for the start-live names (and
addresses), so that the brokers speak TLS that clients verify, never with verification
turned off.

Contract of `make_lab_ca(directory, names, addresses)`: writes, in `directory` (made
if missing), `ca.pem` (the CA's certificate: what clients trust, `--ca`),
`broker.pem` (the server certificate, then the CA's: the chain a broker serves) and
`broker.key` (its private key, mode 0600); the CA's own key is never written (no
further certificate can be signed with it). EC P-256 keys, SHA-256 signatures, the
server certificate valid `days` days for every name and address given (as DNS and IP
subject alternative names) with `serverAuth` usage. Returns the three paths.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controparte.errors import ValidationError

LAB_DAYS = 365


@dataclass(frozen=True, slots=True)
class LabCa:
    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "controparte lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)


def make_lab_ca(
    directory: Path, names: Sequence[str], addresses: Sequence[str] = (), days: int = LAB_DAYS
) -> LabCa:
    """Make the lab CA and the broker's certificate (see the module)."""
    if not names and not addresses:
        raise ValidationError("names", "the certificate needs at least one name or address")
    try:
        ips = [ipaddress.ip_address(a) for a in addresses]
    except ValueError as exc:
        raise ValidationError("addresses", str(exc)) from None
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("controparte lab CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alternatives: list[x509.GeneralName] = [x509.DNSName(n.lower().rstrip(".")) for n in names]
    alternatives += [x509.IPAddress(ip) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0] if names else str(ips[0])))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    found = LabCa(directory / "ca.pem", directory / "broker.pem", directory / "broker.key")
    _write(found.ca, ca_cert.public_bytes(pem), 0o644)
    _write(found.cert, cert.public_bytes(pem) + ca_cert.public_bytes(pem), 0o644)
    _write(
        found.key,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    return found
