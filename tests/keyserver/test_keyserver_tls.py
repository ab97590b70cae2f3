"""The self-signed certificate of `serve --self-signed`."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509

from pylime.keyserver.tls import certificate_fingerprint, ensure_self_signed


def test_key_is_owner_only_and_names_are_in_the_san(tmp_path: Path) -> None:
    """The key file is 0600 and the certificate covers localhost and 127.0.0.1."""
    cert, key = ensure_self_signed(tmp_path, ["localhost", "127.0.0.1", "keys.example.org"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "keys.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_existing_certificate_is_reused(tmp_path: Path) -> None:
    """A second call keeps the same certificate, so pinned clients keep working."""
    cert, _ = ensure_self_signed(tmp_path)
    first = certificate_fingerprint(cert)
    ensure_self_signed(tmp_path)
    assert certificate_fingerprint(cert) == first and first.count(":") == 31
