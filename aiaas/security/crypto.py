"""Encryption at rest: envelope encryption with AES-256-GCM.

Why envelope encryption: each organization's files are encrypted with its own random
data key; only the small wrapped data key is encrypted with the key-encryption key
(KEK) derived from the master secret. Rotating the master secret then means
re-wrapping a few keys, not re-encrypting every dataset and model.

Why frames: datasets and model artifacts can be gigabytes, so files are encrypted in
fixed-size frames that stream through memory. Each frame has its own random nonce and
its own tag, and its associated data binds the file header, the caller's `aad` (say,
the org and file id, so a ciphertext cannot be moved to another record), the frame
index (so frames cannot be reordered or dropped from the middle) and a final-frame
flag (so the file cannot be cut short at a frame boundary, or extended).

File layout (version 1)::

    header:  MAGIC (8 bytes) | version (1 byte) | chunk_size (4 bytes, big endian)
    frames:  nonce (12 bytes) | ciphertext of <= chunk_size bytes | tag (16 bytes)

Every frame but the last holds exactly `chunk_size` plaintext bytes; the last holds
0..chunk_size (an empty file is one empty final frame). Streaming readers see
plaintext before the end is verified: a truncated file raises only at the end, so
callers must treat the output as untrusted until the call returns (write to a temp
file, rename after).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from aiaas.core.errors import AiaasError, ConfigurationError

logger = logging.getLogger(__name__)

MAGIC = b"AIAASENC"
VERSION = 1
DEFAULT_CHUNK_SIZE = 1024 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024  # refuse absurd headers before allocating for them
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

_HEADER = struct.Struct(">8sBI")
_FRAME_AAD = struct.Struct(">QB")  # frame index, final flag
_KEK_INFO = b"aiaas/kek/v1"
_WRAP_VERSION = b"\x01"
_WRAP_AAD_PREFIX = b"aiaas/wrapped-key/v1\x00"


class DecryptionError(AiaasError):
    """Ciphertext that does not authenticate: wrong key, wrong context, or tampered.

    The message never says which, and never carries key material: to a client this is
    an internal error, to an operator the log says which file failed.
    """

    code = "internal_error"


# ---------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------


def derive_kek(master_secret: str) -> bytes:
    """The 32-byte key-encryption key for a master secret (HKDF-SHA256, fixed label).

    The label versions the derivation, so a future scheme can derive a different key
    from the same secret without ambiguity.
    """
    if not master_secret:
        raise ConfigurationError("The master secret is empty; set AIAAS_SECRET_KEY.")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_KEK_INFO)
    return hkdf.derive(master_secret.encode("utf-8"))


def new_data_key() -> bytes:
    """A fresh random 256-bit data key."""
    return os.urandom(KEY_BYTES)


def _check_key(key: bytes, what: str) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise ValueError(f"The {what} must be {KEY_BYTES} bytes.")


def _wrap_aad(org_id: str) -> bytes:
    return _WRAP_AAD_PREFIX + org_id.encode("utf-8")


def wrap_key(kek: bytes, data_key: bytes, *, org_id: str) -> bytes:
    """Encrypt a data key under the KEK, bound to `org_id` (stored next to the org)."""
    _check_key(kek, "key-encryption key")
    _check_key(data_key, "data key")
    nonce = os.urandom(NONCE_BYTES)
    return _WRAP_VERSION + nonce + AESGCM(kek).encrypt(nonce, bytes(data_key), _wrap_aad(org_id))


def unwrap_key(kek: bytes, wrapped: bytes, *, org_id: str) -> bytes:
    """The data key inside `wrapped`; DecryptionError for a wrong KEK, org or blob."""
    _check_key(kek, "key-encryption key")
    if len(wrapped) != 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES or wrapped[:1] != _WRAP_VERSION:
        raise DecryptionError("The wrapped data key is malformed.")
    nonce, sealed = wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :]
    try:
        return AESGCM(kek).decrypt(nonce, sealed, _wrap_aad(org_id))
    except InvalidTag:
        raise DecryptionError(
            "Could not unwrap the data key: the master secret or the organization does not match."
        ) from None


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def _read_exactly(src: BinaryIO, n: int) -> bytes:
    """Up to n bytes, looping over short reads (pipes and sockets return less)."""
    parts: list[bytes] = []
    remaining = n
    while remaining:
        chunk = src.read(remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def encrypt_file(
    src: BinaryIO, dst: BinaryIO, data_key: bytes, *, aad: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> int:
    """Stream `src` into `dst` encrypted; returns the number of plaintext bytes.

    `aad` names what this ciphertext is (e.g. b"org_1/file_2"); decrypting needs the same.
    """
    header, frames = _seal(src, data_key, aad=aad, chunk_size=chunk_size)
    dst.write(header)
    total = 0
    for nonce, sealed in frames:
        dst.write(nonce)
        dst.write(sealed)
        total += len(sealed) - TAG_BYTES
    return total


def encrypt_stream(
    src: BinaryIO, data_key: bytes, *, aad: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[bytes]:
    """The encrypted file as it is made: the header, then for each `chunk_size` bytes of `src` its frame's
    nonce and its ciphertext + tag, as two pieces (joining them would copy every frame once more).

    Pulls `src` one chunk ahead (a frame is final when nothing follows it), so at most two chunks of
    plaintext are held at once, whatever the size of `src`.
    """
    header, frames = _seal(src, data_key, aad=aad, chunk_size=chunk_size)
    yield header
    for nonce, sealed in frames:
        yield nonce
        yield sealed


def _seal(src: BinaryIO, data_key: bytes, *, aad: bytes, chunk_size: int) -> tuple[bytes, Iterator[tuple[bytes, bytes]]]:
    """The header, and (nonce, ciphertext + tag) for each frame of `src` as it is read."""
    _check_key(data_key, "data key")
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE} bytes.")
    header = _HEADER.pack(MAGIC, VERSION, chunk_size)
    return header, _sealed_frames(src, AESGCM(data_key), header, aad, chunk_size)


def _sealed_frames(src: BinaryIO, aead: AESGCM, header: bytes, aad: bytes,
                   chunk_size: int) -> Iterator[tuple[bytes, bytes]]:
    index = 0
    current = _read_exactly(src, chunk_size)
    while True:
        following = _read_exactly(src, chunk_size) if len(current) == chunk_size else b""
        final = not following
        nonce = os.urandom(NONCE_BYTES)
        frame_aad = header + aad + _FRAME_AAD.pack(index, final)
        yield nonce, aead.encrypt(nonce, current, frame_aad)
        if final:
            return
        current = following
        index += 1


def _iter_decrypt(src: BinaryIO, data_key: bytes, aad: bytes) -> Iterator[bytes]:
    """Yield verified plaintext frames; raise DecryptionError on any inconsistency."""
    _check_key(data_key, "data key")
    header = _read_exactly(src, _HEADER.size)
    if len(header) != _HEADER.size:
        raise DecryptionError("The encrypted file is truncated (no header).")
    magic, version, chunk_size = _HEADER.unpack(header)
    if magic != MAGIC:
        raise DecryptionError("This is not an aiaas encrypted file.")
    if version != VERSION:
        raise DecryptionError(f"Unsupported encrypted file version {version}.")
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise DecryptionError("The encrypted file header is corrupt.")
    aead = AESGCM(data_key)
    frame_size = NONCE_BYTES + chunk_size + TAG_BYTES
    index = 0
    current = _read_exactly(src, frame_size)
    while True:
        if len(current) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("The encrypted file is truncated.")
        following = _read_exactly(src, frame_size) if len(current) == frame_size else b""
        final = not following
        frame_aad = header + aad + _FRAME_AAD.pack(index, final)
        try:
            plain = aead.decrypt(current[:NONCE_BYTES], current[NONCE_BYTES:], frame_aad)
        except InvalidTag:
            raise DecryptionError(
                "The encrypted file failed authentication: wrong key or context, or it was "
                "modified, truncated or reordered."
            ) from None
        yield plain
        if final:
            return
        current = following
        index += 1


def decrypt_file(src: BinaryIO, dst: BinaryIO, data_key: bytes, *, aad: bytes) -> int:
    """Stream-decrypt `src` into `dst`; returns plaintext bytes written.

    On DecryptionError `dst` may already hold a verified prefix: discard it.
    """
    total = 0
    for plain in _iter_decrypt(src, data_key, aad):
        dst.write(plain)
        total += len(plain)
    return total


def decrypt_to_bytes(path: Path, data_key: bytes, *, aad: bytes) -> bytes:
    """The whole plaintext of a (small) encrypted file, fully verified."""
    with open(path, "rb") as fh:
        return b"".join(_iter_decrypt(fh, data_key, aad))


def open_decrypted(path: Path | str, data_key: bytes, *, aad: bytes) -> Iterator[bytes]:
    """Plaintext frames of an encrypted file, streamed; the file closes when iteration ends.

    Each yielded frame is authentic, but completeness is only known once iteration
    finishes without DecryptionError.
    """
    with open(path, "rb") as fh:
        yield from _iter_decrypt(fh, data_key, aad)
