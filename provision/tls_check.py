"""Checks of a certificate given as secrets (``tls: {custom: ...}``) on the controller, before
any host is touched (pure)."""
from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        return name.count(".") == pattern.count(".") and name.endswith(pattern[1:])
    return pattern == name


def custom_problem(chain_pem: str, key_pem: str, names: tuple[str, ...]) -> str:
    """Why this chain and key cannot serve ``names`` ("" when they can): not PEM, a key that is
    not the certificate's, a name the certificate does not cover."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError:
        return "the certificate is not a PEM certificate chain"
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return "the key is not an unencrypted PEM private key"
    leaf = certs[0]
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, fmt) != \
            leaf.public_key().public_bytes(serialization.Encoding.DER, fmt):
        return "the key does not belong to the certificate (the first one of the chain)"
    try:
        sans = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value \
            .get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        sans = []
    missing = [n for n in names if not any(_matches(p.lower(), n) for p in sans)]
    if missing:
        return f"the certificate does not cover {' '.join(missing)} (it names {' '.join(sans) or 'no DNS name'})"
    return ""
