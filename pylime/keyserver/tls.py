"""A self-signed TLS certificate for a key server that has none (``serve --self-signed``)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["certificate_fingerprint", "ensure_self_signed", "generate_self_signed"]


def _write_private(path: Path, data: bytes) -> None:
    """Write a file that only its owner can read, from its creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_self_signed(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    names: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 825,
) -> None:
    """Write a new P-256 key (mode 0600) and a self-signed certificate for ``names``.

    ``names`` may mix DNS names and IP addresses; each becomes a subjectAltName. Clients pin
    the certificate itself as their CA file.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "pylime")])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(
        Path(key_path),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_self_signed(
    directory: str | os.PathLike[str], names: Sequence[str] = ("localhost", "127.0.0.1")
) -> tuple[Path, Path]:
    """Reuse ``keyserver-cert.pem`` / ``keyserver-key.pem`` in ``directory``, or create them.

    Reusing keeps the fingerprint stable across restarts, so pinned clients keep working.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / "keyserver-cert.pem", d / "keyserver-key.pem"
    if not (cert.is_file() and key.is_file()):
        generate_self_signed(cert, key, names)
    return cert, key


def certificate_fingerprint(cert_path: str | os.PathLike[str]) -> str:
    """SHA-256 fingerprint of a PEM certificate, as colon-separated hex."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
