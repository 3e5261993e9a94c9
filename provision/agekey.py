"""age X25519 keys (the backups' encryption): an identity made on the controller, its recipient for hosts.

age writes both in Bech32: the recipient ``age1…`` (the public key) and the identity
``AGE-SECRET-KEY-1…`` (the private scalar). Pure apart from the random bytes of ``new_identity``.
"""
from __future__ import annotations

import os
import re

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
IDENTITY_HRP, RECIPIENT_HRP = "age-secret-key-", "age"
RECIPIENT = re.compile(r"^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$")


def _polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _expand(hrp: str) -> list[int]:
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _to5(data: bytes) -> list[int]:
    acc, bits, out = 0, 0, []
    for b in data:
        acc, bits = (acc << 8) | b, bits + 8
        while bits >= 5:
            bits -= 5
            out.append((acc >> bits) & 31)
    if bits:
        out.append((acc << (5 - bits)) & 31)
    return out


def _from5(data: list[int]) -> bytes:
    acc, bits, out = 0, 0, bytearray()
    for v in data:
        acc, bits = (acc << 5) | v, bits + 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return bytes(out)


def bech32_encode(hrp: str, data: bytes) -> str:
    words = _to5(data)
    poly = _polymod(_expand(hrp) + words + [0] * 6) ^ 1
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[w] for w in words + checksum)


def bech32_decode(text: str) -> tuple[str, bytes]:
    text = text.lower()
    hrp, _, rest = text.rpartition("1")
    if not hrp or len(rest) < 6 or any(ch not in _CHARSET for ch in rest):
        raise ValueError("not Bech32")
    words = [_CHARSET.index(ch) for ch in rest]
    if _polymod(_expand(hrp) + words) != 1:
        raise ValueError("bad Bech32 checksum")
    return hrp, _from5(words[:-6])


def new_identity() -> str:
    """A fresh age identity (``AGE-SECRET-KEY-1…``), as ``age-keygen`` makes."""
    return bech32_encode(IDENTITY_HRP, os.urandom(32)).upper()


def recipient_of(identity: str) -> str:
    """The recipient (public key) of an age identity; ValueError when it is none."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    hrp, scalar = bech32_decode(identity.strip())
    if hrp != IDENTITY_HRP or len(scalar) != 32:
        raise ValueError("not an age identity (AGE-SECRET-KEY-1…)")
    public = X25519PrivateKey.from_private_bytes(scalar).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return bech32_encode(RECIPIENT_HRP, public)
