"""Sortable, prefixed ids: `<prefix>-<12 hex ms timestamp><12 random base32>`.

Ids sort by creation time, which lets list endpoints page with `after=<id>` alone.
"""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
_lock = threading.Lock()
_last_ms = 0
_seq = 0


def _random_part(n: int) -> str:
    return "".join(_ALPHABET[b & 31] for b in secrets.token_bytes(n))


def new_id(prefix: str) -> str:
    """Return a new id; ids made in one process are strictly increasing."""
    global _last_ms, _seq
    with _lock:
        now = int(time.time() * 1000)
        if now <= _last_ms:
            _seq += 1
            now = _last_ms
        else:
            _seq = 0
            _last_ms = now
        seq = _seq
    return f"{prefix}-{now:011x}{seq:04x}{_random_part(10)}"
