"""API key format: `aiaas_sk_<32 base62 chars>_<6 base62 chars of CRC32>`.

The checksum lets us reject typos and garbage before any database lookup. Keys are
stored only as SHA-256 plus a short display prefix; the plaintext is shown once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

KEY_PREFIX = "aiaas_sk_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 32
_CRC_LEN = 6
_KEY_RE = re.compile(rf"^{KEY_PREFIX}([0-9A-Za-z]{{{_BODY_LEN}}})_([0-9A-Za-z]{{{_CRC_LEN}}})$")
DISPLAY_CHARS = len(KEY_PREFIX) + 6

SCOPES = ("admin", "write", "infer", "read")


def _b62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _b62(zlib.crc32(body.encode()), _CRC_LEN)


def generate_key() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))
    return f"{KEY_PREFIX}{body}_{_checksum(body)}"


def is_well_formed(key: str) -> bool:
    """Format and checksum check; pure CPU, no database."""
    m = _KEY_RE.match(key)
    if m is None:
        return False
    return hmac.compare_digest(_checksum(m.group(1)), m.group(2))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_CHARS]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the organisation, the key and what it may do."""

    org_id: str
    key_id: str
    scopes: frozenset[str]

    def allows(self, required: str) -> bool:
        return scope_allows(self.scopes, required)


# Which granted scope satisfies which required scope. `admin` covers everything;
# `write` covers reading; `infer` is only inference (for keys embedded in apps).
_IMPLIES: dict[str, frozenset[str]] = {
    "admin": frozenset(SCOPES),
    "write": frozenset({"write", "read"}),
    "read": frozenset({"read"}),
    "infer": frozenset({"infer"}),
}


def scope_allows(granted: frozenset[str] | set[str], required: str) -> bool:
    return any(required in _IMPLIES.get(s, frozenset()) for s in granted)
